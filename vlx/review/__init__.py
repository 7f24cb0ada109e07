"""The review page: a run's predictions in a browser, with e-ViL's four-level rating of every explanation."""
