"""Print the directory under PREFIX (argument 1, default /usr) where this Python finds
pure-Python packages, for `make install` (scripts/install-tree).

sysconfig's posix_prefix purelib (/usr/lib/python3.X/site-packages) is what Oracle
Linux's and Fedora's python3 search. Debian's and Ubuntu's search
/usr/lib/python3/dist-packages instead (their deb_system scheme) and, for /usr/local,
/usr/local/lib/python3.X/dist-packages. So: the first candidate the interpreter's own
site module lists, else posix_prefix's purelib.
"""
from __future__ import annotations

import site
import sys
import sysconfig

prefix = sys.argv[1] if len(sys.argv) > 1 else "/usr"
variables = {"base": prefix, "platbase": prefix}
purelib = sysconfig.get_paths("posix_prefix", vars=variables)["purelib"]
candidates = [purelib, "%s/lib/python%d.%d/dist-packages" % ((prefix,) + sys.version_info[:2])]
if "deb_system" in sysconfig.get_scheme_names():
    candidates.insert(0, sysconfig.get_paths("deb_system", vars=variables)["purelib"])
searched = site.getsitepackages()
print(next((path for path in candidates if path in searched), purelib))
