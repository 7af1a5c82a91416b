"""zone-agent: the edge agent that runs one warehouse zone (a "node") on a Raspberry Pi."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Set at build time from the git tag by setuptools-scm (pyproject.toml): a release is
    # "1.2.0", a build between tags "1.2.1.dev3+g1a2b3c4". Every birth carries it as ``sw``.
    __version__ = version("zone-agent")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"
