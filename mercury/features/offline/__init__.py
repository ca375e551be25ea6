"""The batch path over the Spark executor: feature history per entity and day (with its Great
Expectations checkpoint), point-in-time training sets, and the demo's batch step."""
