"""The guest's network: DHCP or a static address, checked before anything is touched."""

from __future__ import annotations

import pytest

from hostcreator import config
from hostcreator.build import network
from hostcreator.errors import InvalidInput

pytestmark = pytest.mark.unit


def load(tmp_path, **values):
    path = tmp_path / "conf"
    path.write_text("")
    return config.load(path, overrides=values, environ={})


def test_a_static_address_replaces_the_dhcp_file(tmp_path):
    cfg = load(tmp_path, IP_ADDRESS="10.0.2.15/24", GATEWAY="10.0.2.2", DNS="10.0.2.3,10.0.2.4")
    network.check(cfg)
    directory = tmp_path / "root" / network.NETWORK_DIR
    directory.mkdir(parents=True)
    (directory / network.DHCP_FILE).write_text("[Network]\nDHCP=yes\n")
    assert network.write(tmp_path / "root", cfg) == [directory / network.STATIC_FILE]
    assert sorted(p.name for p in directory.iterdir()) == [network.STATIC_FILE]
    text = (directory / network.STATIC_FILE).read_text()
    for line in ("Name=en* eth*", "DHCP=no", "Address=10.0.2.15/24", "Gateway=10.0.2.2",
                 "DNS=10.0.2.3", "DNS=10.0.2.4"):
        assert f"\n{line}\n" in text
    assert network.describe(cfg) == "static 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3 10.0.2.4"


def test_dhcp_keeps_the_skeleton_file_and_dns_alone_is_a_drop_in(tmp_path):
    assert network.write(tmp_path, load(tmp_path)) == []
    written = network.write(tmp_path, load(tmp_path, DNS="2001:db8::53"))
    assert written == [tmp_path / network.NETWORK_DIR / f"{network.DHCP_FILE}.d" /
                       "hostcreator-dns.conf"]
    assert "DNS=2001:db8::53\n" in written[0].read_text()
    network.check(load(tmp_path, IP_ADDRESS="2001:db8::10/64", GATEWAY="2001:db8::1"))
    network.check(load(tmp_path, IP_ADDRESS="192.0.2.10/24", DHCP="no"))


@pytest.mark.parametrize("values,message", [
    ({"IP_ADDRESS": "10.0.2.300/24"}, "'10.0.2.300' is not an IP address"),
    ({"IP_ADDRESS": "web1/24"}, "'web1' is not an IP address"),
    ({"IP_ADDRESS": "10.0.2.15"}, "'10.0.2.15' has no prefix length (CIDR), e.g. 10.0.2.15/24"),
    ({"IP_ADDRESS": "10.0.2.15/33"}, "prefix /33 of '10.0.2.15/33' is out of range (1-32)"),
    ({"IP_ADDRESS": "10.0.2.15/0"}, "prefix /0 of '10.0.2.15/0' is out of range"),
    ({"IP_ADDRESS": "2001:db8::1/129"}, "out of range (1-128)"),
    ({"IP_ADDRESS": "10.0.2.0/24"}, "10.0.2.0 is the network's own or its broadcast address"),
    ({"GATEWAY": "gw"}, "GATEWAY: 'gw' is not an IP address"),
    ({"DNS": "10.0.2.3 resolver"}, "DNS: 'resolver' is not an IP address"),
    ({"DHCP": "perhaps"}, "DHCP: 'perhaps' is not yes or no"),
])
def test_bad_values_name_the_setting(tmp_path, values, message):
    with pytest.raises(InvalidInput) as exc:
        load(tmp_path, **values)
    assert message in exc.value.message


@pytest.mark.parametrize("values,message", [
    ({"IP_ADDRESS": "10.0.2.15/24", "GATEWAY": "10.0.3.1"},
     "GATEWAY=10.0.3.1 is outside the subnet 10.0.2.0/24 of IP_ADDRESS=10.0.2.15/24"),
    ({"IP_ADDRESS": "10.0.2.15/24", "GATEWAY": "2001:db8::1"}, "is outside the subnet"),
    ({"IP_ADDRESS": "10.0.2.15/24", "GATEWAY": "10.0.2.15"}, "is the VM's own address"),
    ({"IP_ADDRESS": "10.0.2.15/24", "DHCP": "yes"},
     "IP_ADDRESS=10.0.2.15/24 and DHCP=yes exclude each other"),
    ({"GATEWAY": "10.0.2.2"}, "GATEWAY=10.0.2.2 needs IP_ADDRESS"),
])
def test_settings_that_do_not_fit_together(tmp_path, values, message):
    with pytest.raises(InvalidInput) as exc:
        network.check(load(tmp_path, **values))
    assert message in exc.value.message
