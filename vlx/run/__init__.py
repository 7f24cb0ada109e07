"""A run directory and what it holds: its files, the records read from and written to them, its manifest, its lock.

Every file name of a run lives in `vlx.run.directory.RunDir`; stages and readers (report, compare, review) go
through it rather than joining names onto paths themselves.
"""
