"""Feature dashboards: stored results of a run, the pages that show them and the JSON API."""
