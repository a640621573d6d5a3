"""Whole traces: a recording's spans reach Application Insights together or not at all.

Left to itself the Azure Monitor distro samples each span by rate (``RateLimitedSampler``): a
span continuing a remote parent (the worker continuing the webhook's trace from the job's
``traceparent``) decides afresh, so under load the download, the blob commit and the ledger's
``stored`` were dropped while the webhook's spans were kept. The distro's documented alternative,
``sampling_ratio`` (``ApplicationInsightsSampler``), decides by trace id (the same hash the other
Application Insights SDKs use), which is consistent across instances, but it ignores the parent:
and OpenTelemetry's own ``ParentBased(TraceIdRatioBased)`` (``OTEL_TRACES_SAMPLER``) follows the
parent's flag, which under the Functions host is always "sampled" (the host does not sample in
OpenTelemetry mode, azure-functions-host#11496), so its ratio would never apply in Azure.

The sampler here is both: a parent's "not sampled" is followed (a child of a dropped span is
dropped), and otherwise the decision is by trace id at the configured ratio, so the webhook and
every worker that continues its trace decide the same for the same trace. Each kept span carries
the ratio (``_MS.sampleRate``), so Application Insights counts each kept item as 1/ratio items.

The OpenTelemetry SDK and the exporter are imported here: only
:func:`shared.telemetry.configure_from_environment` imports this module.
"""

from __future__ import annotations

from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler


def whole_trace_sampler(ratio: float) -> Sampler:
    """Parent-based, by trace id at ``ratio`` (0..1) wherever a parent did not drop the trace."""
    by_trace_id = ApplicationInsightsSampler(sampling_ratio=ratio)
    return ParentBased(
        root=by_trace_id,
        remote_parent_sampled=by_trace_id,
        remote_parent_not_sampled=ALWAYS_OFF,
        local_parent_sampled=by_trace_id,
        local_parent_not_sampled=ALWAYS_OFF,
    )
