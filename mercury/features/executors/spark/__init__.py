"""The Spark executor: point-in-time values of compiled feature sets over the lake
(``executor``), and the session the batch jobs share (``session``)."""
