"""The ``sftp_upload`` task: put one upstream output, local file or tenant blob on a partner's SFTP server.

A source path that an upstream task declared as an output is that task's recorded blob in this run: it is
streamed like any tenant blob, and its sha256 must be the recorded one before the file is published.

The upload is streamed (neither a blob nor a local file is ever held whole in memory or copied to local
disk) into a temporary name next to the target and renamed onto it only once every byte has arrived, so
the partner never sees a half-written file.

Failures that a retry cannot fix (bad input, a missing source, refused credentials, a remote path the
server will not let us write) raise ``AirflowFailException``; network trouble raises ``AirflowException``
so Airflow retries the task. SAS tokens, account keys, passwords and private keys never appear in
messages, logs or the returned value.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from data_platform import lineage
from data_platform.artifacts import Input, RecordedOutput, upstream_inputs
from data_platform.sources import BlobSource, LocalSource, parse_source, recorded_source, source_chunks
from data_platform.storage import mask_sas_signatures

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from data_platform.lineage import OperatorLineage


def _check_remote_path(remote_path: object) -> str:
    if (
        not isinstance(remote_path, str)
        or not remote_path.strip()
        or remote_path.endswith("/")
        or posixpath.basename(remote_path) in (".", "..")
    ):
        raise AirflowFailException(
            f"remote_path {remote_path!r} does not name a file: give the full path of the file to create "
            "on the SFTP server, such as /incoming/out.csv."
        )
    return remote_path


def _remote_error(err: BaseException, remote_path: str, server: str) -> AirflowException:
    if isinstance(err, PermissionError):
        return AirflowFailException(
            f"the SFTP server {server} does not let us write {remote_path!r} (permission denied): ask the "
            f"partner to allow uploads to {posixpath.dirname(remote_path) or 'the login directory'!r}, "
            "or fix remote_path."
        )
    return AirflowException(f"uploading to {remote_path!r} on the SFTP server {server} failed: {err}")


def _remote_stat(sftp: Any, path: str) -> Any:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def _is_directory(attributes: Any) -> bool:
    # Some servers leave st_mode out; trust them rather than refuse a directory that may well exist.
    return attributes.st_mode is None or stat.S_ISDIR(attributes.st_mode)


def _make_remote_directories(sftp: Any, directory: str, remote_path: str, server: str) -> None:
    """``mkdir -p directory``, walking up only as far as something is missing."""
    if directory in ("", "/"):
        return
    try:
        attributes = sftp.stat(directory)
    except FileNotFoundError:
        _make_remote_directories(sftp, posixpath.dirname(directory), remote_path, server)
        try:
            sftp.mkdir(directory)
        except OSError as err:
            made = _remote_stat(sftp, directory)
            # A concurrent upload into the same directory may have won the race.
            if made is not None and _is_directory(made):
                return
            if made is not None:
                raise _parent_is_file(directory, remote_path, server) from None
            if isinstance(err, PermissionError):
                raise AirflowFailException(
                    f"the SFTP server {server} does not let us create the directory {directory!r} for "
                    f"{remote_path!r} (permission denied): ask the partner to create it or allow uploads "
                    "there, or fix remote_path."
                ) from err
            raise AirflowException(
                f"creating the directory {directory!r} on the SFTP server {server} failed: {err}"
            ) from err
        return
    except PermissionError as err:
        raise AirflowFailException(
            f"the SFTP server {server} does not let us look at the directory {directory!r} for "
            f"{remote_path!r} (permission denied): ask the partner for access, or fix remote_path."
        ) from err
    if not _is_directory(attributes):
        raise _parent_is_file(directory, remote_path, server)


def _parent_is_file(directory: str, remote_path: str, server: str) -> AirflowFailException:
    return AirflowFailException(
        f"cannot upload to {remote_path!r}: {directory!r} on the SFTP server {server} is a file, not a "
        "directory; fix remote_path, or ask the partner to remove that file."
    )


def _move_into_place(sftp: Any, part_path: str, remote_path: str, server: str) -> None:
    try:
        # Atomic, and replaces an existing file: the partner sees the old file or the new one.
        sftp.posix_rename(part_path, remote_path)
        return
    except OSError:
        # Servers without OpenSSH's posix-rename extension refuse it; what else went wrong shows below.
        pass
    try:
        sftp.rename(part_path, remote_path)
        return
    except OSError:
        existing = _remote_stat(sftp, remote_path)
        if existing is None:
            raise
    if existing.st_mode is not None and stat.S_ISDIR(existing.st_mode):
        raise AirflowFailException(
            f"remote_path {remote_path!r} is an existing directory on the SFTP server {server}: give the "
            f"full path of the file, such as {remote_path}/FILENAME."
        )
    # Plain SFTP rename never overwrites; without posix-rename the old file must go first.
    sftp.remove(remote_path)
    sftp.rename(part_path, remote_path)


class SftpUploadOperator(BaseOperator):
    """
    Upload ``source`` to ``remote_path`` on the SFTP server of the Airflow connection ``sftp_conn_id``.

    :param source: an absolute local path, or the URI of a blob in one of ``allowed_storage`` (a SAS in
        its query is used as the credential; else ``AZURE_STORAGE_CONNECTION_STRING``'s account key;
        else the worker's Azure identity).
    :param remote_path: the file to create or replace on the server; missing directories are created.
    :param sftp_conn_id: an Airflow connection of type ``sftp`` (host, port, login, key).
    :param allowed_storage: URI prefixes (scheme://host/path) of the tenant's storage; a blob source must
        lie under one of them. Empty: the tenant has no storage and blob sources are refused.
    :param data_inputs: the upstream output ``source`` may name (``PlatformTaskFactory.sftp_upload`` sets
        it): when an upstream task declares it, its recorded blob is uploaded and its sha256 checked.
    :return: ``{"remote_path", "bytes", "sha256", "source"}``, ``source`` without any SAS.
    """

    template_fields = ("source", "remote_path")

    def __init__(
        self,
        *,
        source: str,
        remote_path: str,
        sftp_conn_id: str,
        allowed_storage: Sequence[str] = (),
        data_inputs: Sequence[Input] = (),
        tenant: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        #: What this try learnt, for its lineage: the source's location, the server, what was sent.
        self._lineage_source: str | None = None
        self._lineage_server: tuple[str, int] | None = None
        self._lineage_sent: dict[str, Any] | None = None
        self._lineage_verified = False
        self.data_inputs = tuple(data_inputs)
        self.source = source
        self.remote_path = remote_path
        self.sftp_conn_id = sftp_conn_id
        # A lone string is a Sequence[str] too; iterating it would allow every single-character prefix.
        self.allowed_storage: tuple[str, ...] = (
            (allowed_storage,) if isinstance(allowed_storage, str) else tuple(allowed_storage)
        )

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        # Rendered fields are stored and shown in the UI after masking; a SAS templated in must be masked.
        mask_sas_signatures(self.source)

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        mask_sas_signatures(self.source)
        upstream = self._upstream_output(context)
        source: LocalSource | BlobSource
        if upstream is None:
            source = parse_source(self.source, self.allowed_storage)
        else:
            source = recorded_source(upstream.uri)
        self._lineage_verified = upstream is not None
        self._lineage_source = (
            source.path.resolve().as_uri() if isinstance(source, LocalSource) else source.display
        )
        remote_path = _check_remote_path(self.remote_path)

        with ExitStack() as stack:
            chunks = stack.enter_context(source_chunks(source))
            sftp, server = self._connect(stack)
            size, sha256 = self._upload(
                sftp, chunks, remote_path, server, expected_sha256=upstream.sha256 if upstream else None
            )

        self._lineage_sent = {"bytes": size, "files": 1, "sha256": sha256}
        self.log.info(
            "Uploaded %d bytes (sha256 %s) from %s to %s on %s in %.2f s",
            size,
            sha256,
            source.display,
            remote_path,
            server,
            time.monotonic() - started,
        )
        return {"remote_path": remote_path, "bytes": size, "sha256": sha256, "source": source.display}

    # OpenLineage (data_platform.lineage): the source read and the file put on the partner's server.
    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        return self._guarded_lineage("start", lambda: lineage.lineage(job=self._job_facets()))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        return self._guarded_lineage("end", self._lineage_at_end)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        return self._guarded_lineage("end", self._lineage_at_end)

    def _guarded_lineage(self, stage: str, build: Any) -> OperatorLineage:
        return lineage.guarded(build, tenant=self.tenant or "", dag_id=self.dag_id, task_id=self.task_id,
                               stage=stage, logger=self.log)  # fmt: skip

    def _job_facets(self) -> dict[str, Any]:
        dag = getattr(self, "_dag", None)
        tags = (getattr(dag, "tags", None) or ()) if dag is not None else ()
        return lineage.job_facets(tenant=self.tenant or "", owner=str(self.owner), tags=tags, snapshot=None,
                                  job_type="SFTP_UPLOAD")  # fmt: skip

    def _lineage_at_end(self) -> OperatorLineage:
        sent = self._lineage_sent
        verified = "sftp_upload" if self._lineage_verified else None
        inputs = (
            [lineage.input_dataset(self._lineage_source, sent, verified_by=verified)]
            if self._lineage_source
            else []
        )
        outputs = []
        if self._lineage_server is not None and isinstance(self.remote_path, str):
            host, port = self._lineage_server
            target = f"sftp://{host}:{port}/{self.remote_path.lstrip('/')}"
            outputs.append(lineage.output_dataset(target, sent))
        return lineage.lineage(inputs, outputs, job=self._job_facets())

    def _upstream_output(self, context: Context) -> RecordedOutput | None:
        """The upstream output the source names in this run, or None for a local file or blob."""
        for _, producer, found in upstream_inputs(self, self.data_inputs, context, self.allowed_storage):
            if found.kind != "file":
                raise AirflowFailException(
                    f"{producer}'s output {found.path!r} is a {found.kind}, but sftp_upload sends one file: "
                    f"declare it as a file output, or upload a file inside it"
                )
            self.log.info("Source %s is %s's output in this run: %s (sha256 %s)", found.path, producer,
                          found.uri, found.sha256)  # fmt: skip
            return found
        return None

    def _connect(self, stack: ExitStack) -> tuple[Any, str]:
        """Open the SFTP session (closed with ``stack``) and describe the server for messages."""
        import paramiko
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        conn_id = self.sftp_conn_id
        try:
            # One connection attempt: Airflow's task retries do the retrying, and a key the server has
            # rejected must not be offered again and again (partners lock accounts after failures).
            hook = SFTPHook(ssh_conn_id=conn_id, conn_retry_attempts=1)
        except AirflowNotFoundException:
            raise AirflowFailException(
                f"the Airflow connection {conn_id!r} is not defined: create it (type sftp, with host, login "
                "and key) or fix sftp_conn_id."
            ) from None
        except (AirflowException, ValueError) as err:
            raise AirflowFailException(
                f"the Airflow connection {conn_id!r} cannot be used for SFTP: {err}; fix the connection."
            ) from None
        server = f"{hook.username}@{hook.remote_host}:{hook.port} (connection {conn_id!r})"
        self._lineage_server = (str(hook.remote_host), int(hook.port or 22))
        if hook.key_file and not Path(hook.key_file).is_file():
            raise AirflowFailException(
                f"the SSH key file {hook.key_file!r} of the connection {conn_id!r} does not exist on the "
                "worker: mount the key there, or put the key itself in the connection's private_key extra."
            )
        try:
            return stack.enter_context(hook.get_managed_conn()), server
        except paramiko.AuthenticationException as err:
            raise AirflowFailException(
                f"SFTP authentication failed for {server}: {err} Check the connection's user and key, and "
                "that the partner has installed its public key."
            ) from err
        except paramiko.BadHostKeyException as err:
            raise AirflowFailException(
                f"the SFTP server {server} presented a host key that differs from the connection's "
                "host_key: ask the partner whether their key changed, then update the host_key extra."
            ) from err
        except paramiko.SSHException as err:
            if "known_hosts" not in str(err):
                raise AirflowException(f"could not open an SFTP session with {server}: {err}") from err
            raise AirflowFailException(
                f"the host key of the SFTP server {server} is not known: set the connection's host_key "
                "extra to the partner's public host key (e.g. from ssh-keyscan)."
            ) from err
        except (OSError, EOFError) as err:
            raise AirflowException(f"could not connect to the SFTP server {server}: {err}") from err

    def _upload(
        self,
        sftp: Any,
        chunks: Iterator[bytes],
        remote_path: str,
        server: str,
        *,
        expected_sha256: str | None = None,
    ) -> tuple[int, str]:
        import paramiko

        try:
            _make_remote_directories(sftp, posixpath.dirname(remote_path), remote_path, server)
        except (OSError, EOFError, paramiko.SSHException) as err:
            raise _remote_error(err, remote_path, server) from err
        # Unique per attempt: two attempts running at once (a zombie and its retry) must not write
        # into the same file.
        part_path = f"{remote_path}.{uuid.uuid4().hex[:12]}.part"
        try:
            remote_file = sftp.open(part_path, "wb")
        except (OSError, EOFError, paramiko.SSHException) as err:
            raise _remote_error(err, remote_path, server) from err

        digest = hashlib.sha256()
        size = 0
        try:
            with remote_file:
                # Without pipelining every 32 KiB write request waits for the server's reply.
                remote_file.set_pipelined(True)
                for chunk in chunks:
                    digest.update(chunk)
                    remote_file.write(chunk)
                    size += len(chunk)
                # close() would flush too but ignores errors in what it flushes.
                remote_file.flush()
            written = sftp.stat(part_path).st_size
            if written != size:
                raise AirflowException(
                    f"the SFTP server {server} stored {written} bytes of {size} in {part_path!r}; "
                    "nothing was published."
                )
            if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
                # The blob changed after its producer recorded it: retrying would send the same bytes.
                raise AirflowFailException(
                    f"the source has sha256 {digest.hexdigest()}, but its producer recorded "
                    f"{expected_sha256}: it was changed after the task wrote it; nothing was published. "
                    "Rerun the producing task."
                )
            _move_into_place(sftp, part_path, remote_path, server)
        except BaseException as err:
            self._remove_partial(sftp, part_path)
            if isinstance(err, (OSError, EOFError, paramiko.SSHException)):
                raise _remote_error(err, remote_path, server) from err
            raise
        return size, digest.hexdigest()

    def _remove_partial(self, sftp: Any, part_path: str) -> None:
        try:
            sftp.remove(part_path)
        except FileNotFoundError:
            pass
        except Exception as err:
            self.log.warning("Could not remove the partial upload %s on the SFTP server: %s", part_path, err)
