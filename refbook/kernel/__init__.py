"""Notebook integration (``%load_ext refbook``, ``%%remote``): built on the public
runtime API only.  Not implemented yet."""
