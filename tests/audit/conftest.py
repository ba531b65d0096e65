from tests.core.conftest import s3_url  # noqa: F401 - the real S3 endpoint (moto server)
