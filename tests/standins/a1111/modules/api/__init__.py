"""Stand-in for A1111 v1.10.1 ``modules/api`` (written from the API, not the real code)."""
