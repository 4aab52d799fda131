"""ovmd: a Xen guest agent compatible with Oracle VM Guest Additions."""
import re

from setuptools import find_packages, setup

# The version lives in ovmd/__init__.py only (read, not imported: setup runs before the
# dependencies are installed).
with open("ovmd/__init__.py", encoding="utf-8") as _init:
    VERSION = re.search(r'^__version__ = "([^"]+)"', _init.read(), re.M).group(1)

setup(
    name="ovmd",
    version=VERSION,
    description="Xen guest agent and template configuration, compatible with Oracle VM's ovmd",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    # The packages live at the top of the tree. Saying so explicitly makes an editable
    # install (`make venv`) a plain .pth naming the tree, which costs nothing at
    # interpreter start-up; without it setuptools installs an import hook (about 8 ms of
    # imports in every process, against the `ovmd -g` budget) or, in its deprecated
    # "compat" mode, warns on every install.
    package_dir={"": "."},
    packages=find_packages(include=["ovmd", "ovmd.*", "templateconfig", "templateconfig.*"]),
    install_requires=[
        "pyudev",
        "simplejson",
        "python-daemon",
        "pycdlib",
    ],
    extras_require={
        # ruff and mypy are pinned: a new release must not fail `make lint` on its own
        # (mypy 2 no longer type-checks for a Python 3.9 target).
        "test": ["pytest", "pytest-mock", "hypothesis", "vermin", "ruff==0.17.6", "mypy==1.20.2"],
    },
    entry_points={
        "console_scripts": [
            "ovmd = ovmd.cli:main",
            "ovm-vmmessage = ovmd.vmmessage:main",
            "ovmd-xenstored = ovmd.xenstore.server:main",
            "ovm-template-config = templateconfig.ovm_template_config:main",
            "ovm-chkconfig = templateconfig.ovm_chkconfig:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
