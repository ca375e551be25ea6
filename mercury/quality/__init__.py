"""Data quality: validation verdicts into dead letters, expectation suites, replay."""
