"""Dataset readers, one module per ``data.source``, registered in :mod:`fl_mia.data.sources.settings`
(the phantom is rendered, not read)."""
