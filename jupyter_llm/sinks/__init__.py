"""Consumers of progress events: history (always on), text, widget, HTML, report."""
