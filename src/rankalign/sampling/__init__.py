"""`rankalign sample`: k candidate responses per prompt from many sources."""
