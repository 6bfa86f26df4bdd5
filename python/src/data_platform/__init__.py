"""The Airflow side of the data platform.

DAG authors use two names::

    dag = CustomerDAGFactory.create("user1_pipeline", tenant="user1", schedule="@daily")
    tasks = PlatformTaskFactory(dag)

Everything else (images, memory, retries, secrets, logging) comes from the platform policy.
Files pass between tasks as declared `outputs=[...]`/`inputs=[...]` (`Output` for options), through
the tenant's storage: docs/data-between-tasks.md.

A DAG file must contain the words ``airflow`` and ``dag`` (the module docstring is a good place):
with its default ``[core] dag_discovery_safe_mode``, Airflow skips every other file unparsed.
"""

from data_platform.agent_command import Snapshot
from data_platform.artifacts import Output
from data_platform.dag_factory import CustomerDAGFactory
from data_platform.operator import PlatformPodOperator
from data_platform.policy import PlatformPolicy, PolicyError, load_policy
from data_platform.task_factory import PlatformTaskFactory

__all__ = [
    "CustomerDAGFactory",
    "Output",
    "PlatformPodOperator",
    "PlatformPolicy",
    "PlatformTaskFactory",
    "PolicyError",
    "Snapshot",
    "load_policy",
]
