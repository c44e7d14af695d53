"""Instance sources in the operator: watching the sourced kinds, counting what really runs, the
usage anchors that time deletions, and the sources' status and webhook rules.

Each ``InstanceSource`` names a kind; every replica resolves it (API discovery) and keeps an
informer on it (``adapters.kube.informer``). Each object the sources select becomes a
Workload-shaped claim in the same state, so admission, holds, status and records treat it
exactly like a Workload (``domain.sources``).

- ``catalog``: the InstanceSource objects and the kinds they name (``SourceCatalog``);
- ``informers``: one informer per kind (``KindInformers``);
- ``objects``: the watched objects, which of them count, under the owner rule (``SourcedObjects``);
- ``anchors``: the UsageAnchors that time a counted object's deletion (``UsageAnchors``);
- ``rules`` and ``duties``: the sourced kinds' webhook rules, the sources' status (leader).

Blast radius: a source that names a kind the apiserver does not serve, or one the operator may
not read, is ``Ready=False`` with the reason; its kind is then neither counted nor gated, and
nothing else is affected. An object whose count cannot be read (``InvalidInstanceCount``) is
reported and keeps its last valid count.
"""
