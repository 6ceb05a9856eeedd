"""fastcheck: a health-check daemon for IPVS farms speaking keepalived's checker language.

This package module owns only the version string; everything else lives in submodules.
"""

__version__ = "0.1.0"
