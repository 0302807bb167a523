// Lost events are not silent: metric alerts on each event subscription's dead-lettered and failed
// deliveries, and on the function app's failed invocations, to one action group that e-mails the
// address given (none: the alerts still fire and show in Azure Monitor > Alerts).
// Deployed to the service's resource group; a metric alert may watch a resource in another one.
//
// Event Grid publishes DeadLetteredCount, DeliveryAttemptFailCount and DroppedEventCount on the
// system topic with the dimension EventSubscriptionName (Event Grid monitoring reference, push
// delivery; Azure Monitor supported metrics, Microsoft.EventGrid/systemTopics), so each alert
// watches one subscription of this environment and nothing of another environment's.
// Every criterion has skipMetricValidation: the rules are created with resources that may have
// emitted nothing yet (infra/README.md, Alerts).

@description('The environment\'s token: names the alert rules and the action group.')
param nameToken string

@description('Resource id of the workspace\'s Event Grid system topic.')
param systemTopicId string

@description('Names of this environment\'s event subscriptions on that topic.')
param subscriptionNames array

@description('Resource id of the app\'s Application Insights component.')
param applicationInsightsId string

@description('E-mail address the action group notifies; empty: no e-mail.')
param alertEmail string = ''

@description('Tags of the action group and the alert rules.')
param tags object = {}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-retrain-${nameToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'retrain'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// An event Event Grid gave up on (after the retries, or at once for a 400/413 answer): it waits in
// the dead-letter container for a replay (infra/README.md, "Dead letters").
resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = [for name in subscriptionNames: {
  name: '${name}-dead-lettered'
  location: 'global'
  tags: tags
  properties: {
    description: 'Events of ${name} were dead-lettered: replay them once the cause is fixed.'
    severity: 1
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          // The topic, its subscriptions or the component may be minutes old: their metrics have
          // no data yet, and Azure Monitor's validation of the metric could refuse the rule.
          skipMetricValidation: true
          dimensions: [
            {
              name: 'EventSubscriptionName'
              operator: 'Include'
              values: [
                name
              ]
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

// An event Event Grid could not even dead-letter (the dead-letter container unreachable, the topic's
// identity without its role there, the container deleted): it is lost, and DeadLetteredCount stays
// 0, so only DroppedEventCount shows it. Split by DropReason, so the alert names the reason.
resource deadLetterFailed 'Microsoft.Insights/metricAlerts@2018-03-01' = [for name in subscriptionNames: {
  name: '${name}-dropped'
  location: 'global'
  tags: tags
  properties: {
    description: 'Events of ${name} were dropped: Event Grid could not dead-letter them (see the DropReason dimension). Check the deadletter container and the topic identity\'s role on it; the events are lost.'
    severity: 0
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Dropped'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DroppedEventCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          skipMetricValidation: true
          dimensions: [
            {
              name: 'EventSubscriptionName'
              operator: 'Include'
              values: [
                name
              ]
            }
            {
              name: 'DropReason'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

// A delivery the function did not accept (an exception, a timeout, the app down): Event Grid
// retries it, so one failure is not a loss, but a run of them becomes dead letters.
resource deliveryFailed 'Microsoft.Insights/metricAlerts@2018-03-01' = [for name in subscriptionNames: {
  name: '${name}-delivery-failed'
  location: 'global'
  tags: tags
  properties: {
    description: 'Deliveries of ${name} to the function failed; Event Grid retries them for 24 hours, then dead-letters them.'
    severity: 2
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeliveryFailed'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeliveryAttemptFailCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          // The topic, its subscriptions or the component may be minutes old: their metrics have
          // no data yet, and Azure Monitor's validation of the metric could refuse the rule.
          skipMetricValidation: true
          dimensions: [
            {
              name: 'EventSubscriptionName'
              operator: 'Include'
              values: [
                name
              ]
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

// Failed invocations of any function of the app (the Functions host logs each invocation as a
// request in Application Insights): the trigger raising, an HTTP route answering 5xx.
resource functionFailures 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'retrain-${nameToken}-function-failures'
  location: 'global'
  tags: tags
  properties: {
    description: 'Function invocations of the retrain service failed; see Application Insights > Failures.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'FailedRequests'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          // The topic, its subscriptions or the component may be minutes old: their metrics have
          // no data yet, and Azure Monitor's validation of the metric could refuse the rule.
          skipMetricValidation: true
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
