"""climai: workflow-orchestrated AI downscaling of km-scale Earth-system fields."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("climai")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
