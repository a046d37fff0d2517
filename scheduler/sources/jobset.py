"""JobSet (`jobset.x-k8s.io/v1alpha2`), and so Kubeflow Trainer v2's TrainJobs, which run
as JobSets: the accelerator pods of all of a JobSet's child Jobs are one gang.

Members: pods labelled `jobset.sigs.k8s.io/jobset-name` that request an accelerator,
except those of a Trainer initializer step (a replicatedJob whose Job template is
labelled `trainer.kubeflow.org/trainjob-ancestor-step` with a value other than
`trainer`): initializers run first and alone, before the trainer's Job exists, so they
take the per-pod path and never wait for the gang.

Size: replicas x min(parallelism, completions) summed over the member replicatedJobs.

Rank: member Jobs in the order of `jobset.sigs.k8s.io/job-global-index` (replicatedJobs
in spec order, then job index); each Job's pods are a block of consecutive ranks:
rank = the pods of the member Jobs before it + `batch.kubernetes.io/job-completion-index`
(with one member replicatedJob: global index x parallelism + completion index).

Sub-groups: each child Job. With `alpha.jobset.sigs.k8s.io/exclusive-topology: KEY` on
the JobSet (or the same KEY on every member replicatedJob's template) each Job is a slice:
inside one KEY domain, alone in it. A KEY on only some member replicatedJobs, or
different KEYs, is refused by name.

Members created later: JobSet's exclusive placement (its webhook strategy) admits only
each Job's completion-index-0 pod until that pod is bound; the rest are created after,
with a nodeSelector for the leader's domain. With `startupPolicyOrder: InOrder`, or a
member replicatedJob that `dependsOn` another member, later replicatedJobs are created
only once earlier ones run. minMember counts the pods that come first; the rest are
planned with them (`GangSpec.later`, built from the templates) and their room held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kube.resources import JOBSETS, ObjectRef
from scheduler.gang import GangKey, GangSpec, Planned, SubGroupSpec
from scheduler.sources.base import (
    JOB_INDEX,
    GangSpecError,
    ObjectLookup,
    Raw,
    annotations_of,
    label_int,
    meta,
    name_and_namespace,
    not_found,
    pod_from_template,
    positive_int,
    read_constraints,
    requests_accelerator,
)
from topology.records import PodRecord, RecordError, pod_from_json

NAME = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
GLOBAL_INDEX = "jobset.sigs.k8s.io/job-global-index"
JOB_KEY = "jobset.sigs.k8s.io/job-key"
EXCLUSIVE = "alpha.jobset.sigs.k8s.io/exclusive-topology"
NODE_SELECTOR_STRATEGY = "alpha.jobset.sigs.k8s.io/node-selector"
ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"
TRAINER_STEP = "trainer"


@dataclass(frozen=True)
class ChildJob:
    """One child Job the JobSet has (or will have), as its spec says."""

    replicated_job: str
    index: int
    global_index: int
    pods: int
    """Pods the Job runs at once: min(parallelism, completions)."""
    exclusive: str | None
    deferred: bool
    """Created only after earlier replicatedJobs run (InOrder startup, dependsOn)."""
    template: Raw

    def name(self, jobset: str) -> str:
        return f"{jobset}-{self.replicated_job}-{self.index}"


def job_key(namespace: str, job_name: str) -> str:
    """JobSet's `job-key` label: the SHA-1 of `namespace/job name`, in hex."""
    return hashlib.sha1(f"{namespace}/{job_name}".encode()).hexdigest()


class JobSetSource:
    name = "JobSet"

    def __init__(self, accelerators: Sequence[str] | None) -> None:
        """`accelerators`: only pods requesting one are members (None: every pod)."""
        self.accelerators = None if accelerators is None else tuple(accelerators)
        self._jobs: dict[tuple[str, str], list[ChildJob]] = {}
        """(uid, resourceVersion) -> member jobs: a rank per pod must not re-read the
        spec."""

    # -- membership ---------------------------------------------------------------------
    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return NAME in pod.labels  # the JobSet's initializer steps are read from it

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        jobset = pod.labels.get(NAME)
        if not jobset:
            return None
        if self.accelerators is not None and not requests_accelerator(pod, self.accelerators):
            return None
        raw = objects.get(JOBSETS, pod.namespace, jobset)
        if raw is not None and _initializer(raw, pod.labels.get(REPLICATED_JOB, "")):
            return None
        return GangKey("JobSet", pod.namespace, jobset)

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        index = label_int(pod, JOB_INDEX)
        global_index = label_int(pod, GLOBAL_INDEX)
        if index is None or global_index is None:
            return None
        raw = objects.get(JOBSETS, pod.namespace, pod.labels.get(NAME, ""))
        if raw is None:
            return None
        before = sum(job.pods for job in self.member_jobs(raw)
                     if job.global_index < global_index)
        return before + index

    def subgroup(self, pod: PodRecord) -> str | None:
        jobset, rjob, index = (pod.labels.get(k) for k in (NAME, REPLICATED_JOB,
                                                           JOB_INDEX_LABEL))
        return f"{jobset}-{rjob}-{index}" if jobset and rjob and index is not None else None

    # -- spec -----------------------------------------------------------------------------
    def member_jobs(self, raw: Raw) -> list[ChildJob]:
        """The child Jobs whose pods are members, in global index order."""
        metadata = meta(raw)
        version = (str(metadata.get("uid") or metadata.get("name")),
                   str(metadata.get("resourceVersion") or ""))
        found = self._jobs.get(version)
        if found is None:
            if len(self._jobs) > 256:
                self._jobs.clear()
            found = self._jobs[version] = [job for job in child_jobs(raw) if self._member(job)]
        return found

    def _member(self, job: ChildJob) -> bool:
        if _is_initializer(job.template):
            return False
        if self.accelerators is None:
            return True
        sample = _sample_pod(job)
        return sample is not None and requests_accelerator(sample, self.accelerators)

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        raw = objects.get(JOBSETS, key.namespace, key.name)
        ref = ObjectRef("JobSet", key.namespace, key.name, str(meta(raw).get("uid") or ""),
                        JOBSETS.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        constraints = read_constraints([("JobSet", annotations_of(raw)), ("Pod", first)])
        seen = len(members)
        if raw is None:
            return GangSpec(ref, seen, seen, constraints,
                            waiting=not_found("JobSet", key.namespace, key.name))
        version = str(meta(raw).get("generation") or "")
        try:
            jobs = self.member_jobs(raw)
            if not jobs:
                raise GangSpecError(f"JobSet {key.namespace}/{key.name}",
                                    "spec.replicatedJobs", "a replicatedJob whose pods request "
                                    "an accelerator", "none")
            exclusive = _exclusive_key(key, jobs)
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, constraints, error=str(exc), version=version)
        size = sum(job.pods for job in jobs)
        leaders_first = exclusive is not None and NODE_SELECTOR_STRATEGY not in (
            annotations_of(raw))
        subgroups = ({job.name(key.name): SubGroupSpec(exclusive, job.pods, True)
                      for job in jobs} if exclusive is not None else {})
        first_wave = sum(1 if leaders_first else job.pods for job in jobs if not job.deferred)
        later: tuple[Planned, ...] = ()
        if first_wave < size:
            later = self._later(key, raw, jobs, members, leaders_first)
        return GangSpec(ref, first_wave, size, constraints, version=version,
                        subgroups=subgroups, later=later)

    def _later(self, key: GangKey, raw: Raw, jobs: list[ChildJob],
               members: Sequence[PodRecord], leaders_first: bool) -> tuple[Planned, ...]:
        """The member pods not created yet that the first wave's placement must plan."""
        present = {(p.labels.get(GLOBAL_INDEX), p.labels.get(JOB_INDEX)) for p in members}
        out = []
        before = 0
        for job in jobs:
            if job.deferred or leaders_first:
                for raw_pod in _pods_of(key.name, key.namespace, raw, job):
                    labels = raw_pod["metadata"]["labels"]
                    index = int(labels[JOB_INDEX])
                    if (str(job.global_index), str(index)) in present:
                        continue
                    if not job.deferred and index == 0:
                        continue  # a leader: created with the first wave
                    out.append(Planned(pod_from_json(raw_pod), before + index,
                                       job.name(key.name)))
            before += job.pods
        return tuple(out)

    def expand(self, obj: Raw) -> list[Raw] | None:
        """Every pod of every child Job, as JobSet and the Job controller create them."""
        if obj.get("kind") != "JobSet":
            return None
        name, namespace = name_and_namespace(obj)
        return [pod for job in child_jobs(obj) for pod in _pods_of(name, namespace, obj, job)]


def child_jobs(raw: Raw) -> list[ChildJob]:
    """Every child Job of the JobSet's spec, in global index order."""
    name, namespace = name_and_namespace(raw)
    where = f"JobSet {namespace}/{name}"
    spec = raw.get("spec") or {}
    in_order = ((spec.get("startupPolicy") or {}).get("startupPolicyOrder") == "InOrder")
    jobset_exclusive = annotations_of(raw).get(EXCLUSIVE)
    out: list[ChildJob] = []
    replicated = spec.get("replicatedJobs") or []
    if not isinstance(replicated, list):
        raise GangSpecError(where, "spec.replicatedJobs", "a list", replicated)
    names = [str((r or {}).get("name")) for r in replicated]
    for position, rjob in enumerate(replicated):
        field = f"spec.replicatedJobs[{position}]"
        if not isinstance(rjob, dict) or not rjob.get("name"):
            raise GangSpecError(where, f"{field}.name", "a replicatedJob name", rjob)
        replicas = positive_int(where, f"{field}.replicas", rjob.get("replicas", 1))
        template = rjob.get("template") or {}
        job_spec = template.get("spec") or {}
        parallelism = positive_int(where, f"{field}.template.spec.parallelism",
                                   job_spec.get("parallelism", 1))
        completions = job_spec.get("completions")
        if completions is not None:
            parallelism = min(parallelism, positive_int(
                where, f"{field}.template.spec.completions", completions))
        exclusive = annotations_of(template).get(EXCLUSIVE) or jobset_exclusive
        depends = [str((d or {}).get("name")) for d in rjob.get("dependsOn") or ()]
        deferred = (in_order and position > 0) or any(d in names for d in depends)
        for index in range(replicas):
            out.append(ChildJob(str(rjob["name"]), index, len(out), parallelism, exclusive,
                                deferred, template))
    return out


def _initializer(raw: Raw, replicated_job: str) -> bool:
    for rjob in (raw.get("spec") or {}).get("replicatedJobs") or ():
        if isinstance(rjob, dict) and rjob.get("name") == replicated_job:
            return _is_initializer(rjob.get("template") or {})
    return False


def _is_initializer(template: Raw) -> bool:
    labels = meta(template).get("labels") or {}
    step = labels.get(ANCESTOR) if isinstance(labels, dict) else None
    return step is not None and step != TRAINER_STEP


def _exclusive_key(key: GangKey, jobs: list[ChildJob]) -> str | None:
    keys = {job.exclusive for job in jobs}
    if keys == {None}:
        return None
    if len(keys) > 1:
        shown = sorted(str(k) for k in keys)
        raise GangSpecError(f"JobSet {key.namespace}/{key.name}",
                            f"metadata.annotations[{EXCLUSIVE}]",
                            "one topology key for every accelerator replicatedJob", shown)
    return next(iter(keys))


def _pods_of(jobset: str, namespace: str, raw: Raw, job: ChildJob) -> list[Raw]:
    job_name = job.name(jobset)
    labels = {NAME: jobset, REPLICATED_JOB: job.replicated_job,
              JOB_INDEX_LABEL: str(job.index), GLOBAL_INDEX: str(job.global_index),
              JOB_KEY: job_key(namespace, job_name)}
    annotations = {EXCLUSIVE: job.exclusive} if job.exclusive else {}
    owner = {"kind": "Job", "name": job_name, "controller": True, "uid": "",
             "apiVersion": "batch/v1"}
    template: Any = (job.template.get("spec") or {}).get("template")
    where = f"JobSet {namespace}/{jobset}"
    field = f"spec.replicatedJobs[{job.replicated_job}].template.spec.template"
    return [pod_from_template(template, where, field, name=f"{job_name}-{i}",
                              namespace=namespace,
                              labels={**labels, JOB_INDEX: str(i)},
                              annotations={**annotations, JOB_INDEX: str(i)}, owner=owner)
            for i in range(job.pods)]


def _sample_pod(job: ChildJob) -> PodRecord | None:
    template = (job.template.get("spec") or {}).get("template")
    try:
        return pod_from_json(pod_from_template(template, "replicatedJob", "template",
                                               name="sample", namespace="default"))
    except (GangSpecError, RecordError):
        return None
