"""Runtimes execute one loaded model version; they are chosen by name (see ``base.runtime_for``)."""
