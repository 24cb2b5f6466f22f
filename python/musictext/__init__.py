"""musictext: text embedders that land in Navidrome's audio embedding spaces."""

__version__ = "0.1.0"
