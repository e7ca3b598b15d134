#!/bin/sh
# Test-only postconfig hook: installs a unit that, once the network is up,
# prints what the tests check to the serial console, between HCREPORT lines.
set -eu
name=$1 root=$2 distr=$3
[ "$HOSTCREATOR_NAME" = "$name" ] && [ "$HOSTCREATOR_ROOT" = "$root" ] \
    && [ "$HOSTCREATOR_DISTR" = "$distr" ]
cat > "$root/usr/local/sbin/hctest-report" <<'SCRIPT'
#!/bin/sh
# Wait (bounded) for an IPv4 address from DHCP before reporting.
i=0
while [ $i -lt 120 ] && ! ip -4 -o addr show scope global | grep -q inet; do
    sleep 1; i=$((i + 1))
done
{
    echo "HCREPORT BEGIN"
    echo "HCREPORT hostname=$(hostname)"
    echo "HCREPORT root_uuid=$(findmnt -n -o UUID /)"
    echo "HCREPORT fstab_root=$(awk '$2 == "/" {print $1}' /etc/fstab)"
    echo "HCREPORT cmdline=$(cat /proc/cmdline)"
    echo "HCREPORT swap=$(swapon --show=NAME --noheadings | head -n 1)"
    echo "HCREPORT swap_uuid=$(lsblk -n -o UUID "$(swapon --show=NAME --noheadings | head -n 1)")"
    echo "HCREPORT device_timeout=$(systemctl show -P DefaultDeviceTimeoutUSec)"
    echo "HCREPORT ipv4=$(ip -4 -o addr show scope global | awk '{print $2 "=" $4}' | head -n 1)"
    # The client ID networkd's DHCP lease was asked with (from the machine-id's DUID).
    echo "HCREPORT dhcp_client_id=$(sed -n 's/^CLIENTID=//p' /run/systemd/netif/leases/* \
        2>/dev/null | head -n 1)"
    if [ -e /usr/sbin/policy-rc.d ]; then echo "HCREPORT policy_rc_d=present"
    else echo "HCREPORT policy_rc_d=absent"; fi
    echo "HCREPORT machine_id=$(cat /etc/machine-id)"
    echo "HCREPORT keygen=$(systemctl show -P ConditionResult hostcreator-ssh-keygen.service)"
    echo "HCREPORT ssh_key=$(ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub | awk '{print $2}')"
    echo "HCREPORT ssh=$(systemctl is-active ssh.service)"
    # Made at this boot (by hostcreator's unit or the distribution's), and served by sshd
    # (which Ubuntu starts on the first connection).
    new=yes boot=$(awk '$1 == "btime" {print $2}' /proc/stat)
    for key in /etc/ssh/ssh_host_*_key; do
        [ "$(stat -c %Y "$key")" -ge "$boot" ] || new=no
    done
    echo "HCREPORT ssh_keys_new=$new"
    echo "HCREPORT ssh_served_key=$(ssh-keyscan -T 20 -t ed25519 127.0.0.1 2>/dev/null \
        | ssh-keygen -l -f - | awk '{print $2}')"
    echo "HCREPORT timezone=$(cat /etc/timezone)"
    # The suites apt has verified indexes of (install.sh ran apt-get update).
    echo "HCREPORT apt_suites=$(apt-get indextargets --format '$(RELEASE)' \
        'Identifier: Packages' | sort -u | tr '\n' ' ')"
    # One kernel, and nothing to upgrade right after the build (the lists of the build).
    echo "HCREPORT kernels=$(dpkg-query -W -f '${db:Status-Abbrev}\n' 'linux-image-[0-9]*' \
        | grep -c '^ii')"
    echo "HCREPORT vmlinuz=$(ls /boot/vmlinuz-* | wc -l)"
    echo "HCREPORT upgradable=$(apt-get -s full-upgrade 2>&1 | grep -c '^Inst ')"
    echo "HCREPORT root_password=$(passwd -S root | awk '{print $2}')"
    echo "HCREPORT authorized_keys=$(grep -c '^ssh-' /root/.ssh/authorized_keys 2>/dev/null)"
    # A clean first boot: no failed unit, nothing logged at error level (so far).
    echo "HCREPORT failed_units=$(systemctl --failed --plain --no-legend | awk '{print $1}' \
        | tr '\n' ' ')"
    echo "HCREPORT journal_errors=$(journalctl -b -p err -q --no-pager -o cat | tr '\n' '|')"
    echo "HCREPORT END"
} > /dev/ttyS0
SCRIPT
chmod 755 "$root/usr/local/sbin/hctest-report"
cat > "$root/etc/systemd/system/hctest-report.service" <<'UNIT'
[Unit]
Description=hostcreator test report on the serial console
After=network-online.target ssh.service hostcreator-ssh-keygen.service sshd-keygen.service
Wants=network-online.target
# The getty hangs up ttyS0 when it starts, which would cut the report short.
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hctest-report

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable hctest-report.service
