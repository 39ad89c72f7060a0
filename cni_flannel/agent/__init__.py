"""The resident plugin agent: runs plugin invocations handed over by the plugin binaries."""
