"""A job's encrypted inputs: decrypted into a private scratch folder (``/dev/shm`` when it has
room, else a 0700 temporary folder) that is removed when the block ends, on success and on
failure; plaintext inputs pass through; the job finds the KEK without Airflow."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from typing import TYPE_CHECKING

import pytest

from llmops.encrypted_files import write_encrypted
from llmops.jobs import scratch as scratch_module
from llmops.jobs.inputs import JobInput, decrypted_inputs
from llmops.jobs.runtime import DataFileTampered, JobInputError
from llmops.privacy import keys

if TYPE_CHECKING:
    from pathlib import Path

KEK = bytes(range(7, 39))
DATA = b'{"prompt": "where is my parcel", "completion": "on its way"}\n'


@pytest.fixture
def job_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The job's KEK as a pod gets it; no key file, connection or KMS to fall back on."""
    monkeypatch.setenv(keys.JOB_KEK_ENV, base64.b64encode(KEK).decode())
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(tmp_path / "no-such.key"))
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_KEK", raising=False)
    monkeypatch.delenv(keys.KMS_KEY_ID_ENV, raising=False)


@pytest.fixture
def sealed(tmp_path: Path) -> str:
    uri = str(tmp_path / "lake" / "train.jsonl.enc")
    write_encrypted(uri, DATA, KEK)
    return uri


def test_inputs_are_decrypted_privately_and_removed_after_the_block(job_key, sealed: str) -> None:
    """Expect the plaintext in a 0700 folder, checked against its hash, and the folder gone after."""
    digest = hashlib.sha256(DATA).hexdigest()
    with decrypted_inputs([JobInput(sealed, "train_file", digest)]) as [path]:
        assert path.read_bytes() == DATA
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.name.startswith(scratch_module.SCRATCH_PREFIX)
        scratch = path.parent
    assert not scratch.exists()


def test_the_scratch_folder_is_removed_when_the_job_fails_inside(job_key, sealed: str) -> None:
    """Expect an exception in the block (the job failing while it reads) to remove the folder too."""
    with pytest.raises(RuntimeError, match="reading failed"):
        with decrypted_inputs([JobInput(sealed, "train_file")]) as [path]:
            scratch = path.parent
            raise RuntimeError("reading failed")
    assert not scratch.exists()


def test_a_plaintext_that_is_not_the_recorded_one_is_refused_and_removed(
    job_key, sealed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Expect the hash check on the decrypted bytes, and no plaintext left behind when it fails."""
    parent = tmp_path / "scratch-parent"
    parent.mkdir()
    monkeypatch.setattr(scratch_module, "scratch_parent", lambda needed: parent)
    with pytest.raises(DataFileTampered, match="train_file: .* is not the file recorded"):
        with decrypted_inputs([JobInput(sealed, "train_file", "0" * 64)]):
            pass
    assert list(parent.iterdir()) == []


def test_dev_shm_is_used_only_when_it_has_room(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Expect /dev/shm for inputs that fit beside the headroom, the temporary folder otherwise."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(scratch_module, "SHM", shm)
    free = scratch_module.shutil.disk_usage(shm).free
    assert scratch_module.scratch_parent(1024) == shm
    assert scratch_module.scratch_parent(free) is None
    monkeypatch.setattr(scratch_module, "SHM", tmp_path / "absent")
    assert scratch_module.scratch_parent(1024) is None


def test_plaintext_inputs_pass_through_and_make_no_scratch(tmp_path: Path) -> None:
    """Expect a plaintext file (a golden set, a split file of an older snapshot) used where it is."""
    plain = tmp_path / "golden.jsonl"
    plain.write_bytes(DATA)
    with decrypted_inputs(
        [JobInput(str(plain), "golden_sets[0].file", hashlib.sha256(DATA).hexdigest())]
    ) as [path]:
        assert path == plain


def test_a_wrong_or_missing_key_is_bad_input(
    sealed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Expect another KEK, and no KEK at all, to fail as JobInputError naming the field."""
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(tmp_path / "no-such.key"))
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_KEK", raising=False)
    monkeypatch.delenv(keys.KMS_KEY_ID_ENV, raising=False)
    monkeypatch.setenv(keys.JOB_KEK_ENV, base64.b64encode(bytes(32)).decode())
    with pytest.raises(JobInputError, match="train_file: cannot decrypt .*wrong key"):
        with decrypted_inputs([JobInput(sealed, "train_file")]):
            pass
    monkeypatch.delenv(keys.JOB_KEK_ENV)
    with pytest.raises(JobInputError, match="has no key to read them"):
        with decrypted_inputs([JobInput(sealed, "train_file")]):
            pass
    assert not (tmp_path / "no-such.key").exists()  # a job never creates a key


@pytest.mark.parametrize(
    "value",
    [
        lambda b64: json.dumps({"conn_type": "generic", "password": b64}),
        lambda b64: "generic://:" + b64.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D") + "@",
    ],
    ids=["json", "uri"],
)
def test_the_job_reads_the_kek_connection_variable_without_airflow(
    value, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Expect the llmops_kek connection's AIRFLOW_CONN_ variable (JSON or URI) to give the KEK."""
    monkeypatch.delenv(keys.JOB_KEK_ENV, raising=False)
    monkeypatch.delenv(keys.KMS_KEY_ID_ENV, raising=False)
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(tmp_path / "no-such.key"))
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_KEK", value(base64.b64encode(KEK).decode()))
    from llmops.privacy.crypto import key_id

    assert keys.job_key_ring().kek_id == key_id(KEK)


def test_a_local_job_inherits_what_it_needs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Expect nothing added to a local job's env when the KEK is a key file or a connection
    variable (the child inherits both), and the job then finds the same key."""
    from llmops.privacy.crypto import load_or_create_key_file

    key_file = tmp_path / "keys" / "kek.key"
    kek = load_or_create_key_file(key_file)
    monkeypatch.setenv("LLMOPS_KEK_FILE", str(key_file))
    monkeypatch.delenv(keys.JOB_KEK_ENV, raising=False)
    monkeypatch.delenv(keys.KMS_KEY_ID_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_KEK", raising=False)
    assert keys.local_job_key_env() == {}
    assert keys.job_key_ring().kek_id == keys.get_key_ring().kek_id == keys.LocalKeyWrapper(kek).kek_id
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_KEK", json.dumps({"password": base64.b64encode(KEK).decode()}))
    assert keys.local_job_key_env() == {}
