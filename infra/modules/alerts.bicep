// Alerts on the platform's deadlines and the failures users describe as "nothing happened", and
// a "calls today" workbook. Every rule is a log search over Application Insights' traces: the app
// writes one log event per outcome through OpenTelemetry, its fields (call_id, outcome,
// latency_ms...) in customDimensions under the same names as in the text (shared/logevents.py).
// docs/operations.md says what each alert means and what to do.

@description('Azure region of the alert rules and the workbook.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix of the resource names (the deployment\'s resource token).')
param nameSuffix string

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Resource id of an action group to notify (email, SMS, webhook...). Empty: the alerts fire in the portal only.')
param actionGroupId string = ''

@description('Alert when an incoming call was answered more than this many milliseconds after its notification arrived. Graph drops a call not answered within 15 000 ms.')
@minValue(1000)
@maxValue(15000)
param answerLatencyThresholdMs int = 10000

@description('Alert when a recording was stored more than this many milliseconds after its completion notification arrived. The platform discards recordings shortly after the call ends.')
@minValue(1000)
param storedLatencyThresholdMs int = 30000

@description('Alert when at least this many recordings failed, were poisoned or abandoned within the window.')
@minValue(1)
param failureCountThreshold int = 5

@description('Window (and evaluation frequency) of the failure alert, ISO 8601.')
@allowed([
  'PT5M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param failureWindow string = 'PT15M'

@description('Alert when Graph answered with error 7503, 7504 or 7505 (application or tenant not allowed to use the calling API) at least this many times within 15 minutes.')
@minValue(1)
param graphTenantErrorThreshold int = 1

var actionGroups = empty(actionGroupId) ? [] : [
  actionGroupId
]

// The fields every query reads, from the app's log events (customDimensions).
var events = 'traces | extend event = tostring(customDimensions.event), outcome = tostring(customDimensions.outcome), call_id = tostring(customDimensions.call_id), operation_id = tostring(customDimensions.operation_id)'

var rules = [
  {
    key: 'answer-latency'
    displayName: 'Calls answered close to Graph\'s 15-second deadline'
    description: 'An incoming call was answered more than ${answerLatencyThresholdMs} ms after its notification arrived; past 15 s Graph drops the call and the caller hears nothing. See docs/operations.md#alert-answer-latency.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT5M'
    query: '${events} | where event == "bot flow: answered" | extend answer_latency_ms = todouble(customDimensions.answer_latency_ms) | where answer_latency_ms > ${answerLatencyThresholdMs}'
    aggregation: 'Count'
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    key: 'stored-latency'
    displayName: 'Recordings stored late after their completion'
    description: 'A recording was committed to Blob Storage more than ${storedLatencyThresholdMs} ms after its completion notification; the platform discards recordings soon after the call, so the next one may be lost. See docs/operations.md#alert-stored-latency.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT5M'
    query: '${events} | where event == "recording download" and outcome == "stored" | extend latency_ms = todouble(customDimensions.latency_ms) | where latency_ms > ${storedLatencyThresholdMs}'
    aggregation: 'Count'
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    key: 'recording-failures'
    displayName: 'Rise in failed, poisoned or abandoned recordings'
    description: 'At least ${failureCountThreshold} recordings failed (Graph or download), were poisoned or were abandoned (no completion) within ${failureWindow}. See docs/operations.md#alert-recording-failures.'
    severity: 1
    frequency: failureWindow
    window: failureWindow
    // One row per failed or poisoned job; a terminated call's row counts its abandoned operations.
    query: '${events} | where (event in ("recording download", "notification") and outcome in ("failed", "poisoned", "invalid")) or (event == "bot flow: call terminated" and toint(customDimensions.abandoned) > 0) | extend failures = iff(event == "bot flow: call terminated", toint(customDimensions.abandoned), 1)'
    aggregation: 'Total'
    measure: 'failures'
    operator: 'GreaterThanOrEqual'
    threshold: failureCountThreshold
  }
  {
    key: 'graph-tenant-errors'
    displayName: 'Graph refuses the bot (errors 7503, 7504, 7505)'
    description: 'Graph answered a calls request with error 7503, 7504 or 7505: the bot\'s app registration, its permissions or the tenant\'s policy do not allow it to use the calling API. Every call fails until an administrator fixes it. See docs/operations.md#alert-graph-tenant-errors.'
    severity: 1
    frequency: 'PT15M'
    window: 'PT15M'
    query: 'traces | extend graph_code = tostring(customDimensions.graph_code) | where graph_code in ("7503", "7504", "7505")'
    aggregation: 'Count'
    measure: ''
    operator: 'GreaterThanOrEqual'
    threshold: graphTenantErrorThreshold
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: 'alert-${rule.key}-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    scopes: [
      applicationInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: rule.aggregation
          metricMeasureColumn: empty(rule.measure) ? null : rule.measure
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}]

// "Calls today": answered, recorded, stored, failed by reason, latency percentiles.
var today = '${events} | where timestamp > startofday(now())'
var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'title'
      content: {
        json: '## Calls today\nFrom the app\'s log events (UTC day). docs/operations.md has the queries to follow one call.'
      }
    }
    {
      type: 3
      name: 'totals'
      content: {
        version: 'KqlItem/1.0'
        title: 'Answered, recorded, stored, failed'
        query: '${today} | summarize answered = countif(event == "bot flow: answered"), recorded = dcountif(operation_id, event == "notification" and outcome == "queued"), stored = countif(event == "recording download" and outcome == "stored"), failed = countif(event in ("recording download", "notification") and outcome in ("failed", "poisoned", "invalid")), abandoned = sumif(toint(customDimensions.abandoned), event == "bot flow: call terminated")'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
    }
    {
      type: 3
      name: 'failures'
      content: {
        version: 'KqlItem/1.0'
        title: 'Failed by reason'
        query: '${today} | where outcome in ("failed", "poisoned", "invalid") | extend result_subcode = tostring(customDimensions.result_subcode), reason = tostring(customDimensions.reason) | summarize recordings = count() by event, outcome, result_subcode, reason | order by recordings desc'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
    }
    {
      type: 3
      name: 'latencies'
      content: {
        version: 'KqlItem/1.0'
        title: 'Deadline latencies (ms)'
        query: '${today} | where event == "bot flow: answered" or (event == "recording download" and outcome == "stored") | extend deadline = iff(event == "bot flow: answered", "notification -> answered (Graph: 15 s)", "completion -> stored"), latency = iff(event == "bot flow: answered", todouble(customDimensions.answer_latency_ms), todouble(customDimensions.latency_ms)) | where isnotnull(latency) | summarize n = count(), p50 = percentile(latency, 50), p95 = percentile(latency, 95), p99 = percentile(latency, 99), worst = max(latency) by deadline'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
    }
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource callsToday 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(applicationInsightsId, 'calls-today')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Calls today'
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: string(workbookContent)
  }
}

output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
output workbookId string = callsToday.id
