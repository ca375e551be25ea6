"""Submitting the Spark jobs of ``spark_jobs/`` where configuration says (``spark_submit``).

- ``jobs``: what a job is (its entry point and arguments), one builder per entry point;
- ``package``: the jobs' code as one content-addressed zip, and its upload to S3;
- ``emr_serverless``: the job run request (package, Iceberg over Glue) and its polling;
- ``local``: the same job as a ``python -m spark_jobs.<job>`` process on ``local[2]``.

Nothing here imports pyspark or airflow; boto3 clients are passed in (the Airflow hook's in a
DAG, a plain client elsewhere), so the AWS calls are tested against moto.
"""
