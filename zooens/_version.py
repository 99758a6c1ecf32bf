"""The package's version, in a module of its own: `zooens/__init__.py` (the facade, whose functions import the
service on first use) re-exports it, and every other module imports it from here, so reading the version never
goes through the facade."""

__version__ = "0.1.0"
