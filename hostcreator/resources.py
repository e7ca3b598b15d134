"""Where the shipped defaults (skel/, hooks/, etc/) are found: in the package itself.

The repository keeps them at its top (skel/, hooks/, etc/); hostcreator/shipped/ holds
a link to each, which setuptools follows, so a wheel, an sdist and the Debian package
carry them as package data, and a checkout or an editable install reads them through
the links. Never looked up in sys.prefix or the checkout: the package is the one place.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hostcreator.errors import HostCreatorError

SHIPPED = ("skel", "hooks", "etc")


def shipped(name: str) -> Path:
    """The shipped directory NAME (skel, hooks or etc) of this installation."""
    # files() of a package installed in a directory is a pathlib.Path; the copies
    # (rsync) need a real directory, not a zip member.
    path = Path(str(resources.files("hostcreator") / "shipped" / name))
    if not path.is_dir():
        raise HostCreatorError(f"the shipped directory {name!r} is missing: {path}",
                               hint="this installation of hostcreator is incomplete; "
                               "reinstall it")
    return path.resolve()
