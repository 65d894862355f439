"""streamrelay: stream files of any size through a REST proxy into storage."""

__version__ = "0.1.0"
