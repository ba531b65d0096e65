"""The bureau's witness bucket: object lock in compliance mode keeps checkpoint copies."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from authops.audit.witness import ObjectLockWitness
from authops.core.errors import Conflict


def test_checkpoint_copies_are_locked_in_the_witness_bucket(s3_url):
    s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="bureau", aws_secret_access_key="bureau-secret",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="bureau-witness", ObjectLockEnabledForBucket=True)
    witness = ObjectLockWitness(s3_url, "bureau-witness", "bureau", "bureau-secret", retention_days=30)
    witness.put("checkpoint-000000000010.json", b'{"tree_size":10}')
    witness.put("checkpoint-000000000010.json", b'{"tree_size":10}')  # the same copy again: fine
    assert witness.get("checkpoint-000000000010.json") == b'{"tree_size":10}'
    with pytest.raises(Conflict):
        witness.put("checkpoint-000000000010.json", b'{"tree_size":11}')
    head = s3.head_object(Bucket="bureau-witness", Key="checkpoint-000000000010.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    version = head["VersionId"]
    with pytest.raises(ClientError):
        s3.delete_object(Bucket="bureau-witness", Key="checkpoint-000000000010.json", VersionId=version)
