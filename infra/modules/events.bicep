// Event Grid: the system topic of the existing Azure ML workspace, and the subscriptions that
// deliver its events to the app's Event Grid trigger. Deployed to the topic's resource group.
//
// Which events, and why three subscriptions. The code acts on five event types, but on
// RunStatusChanged only when the run carries the model-monitor breach tag or the run failed or was
// canceled. Advanced filters in one subscription are ANDed and apply to every event type of that
// subscription, and "breach tag present OR status failed" is an OR across two keys, which one
// subscription cannot express. So, each name prefixed with retrain-<token>- (one set per azd
// environment, so that two environments on one workspace never re-target each other's):
//   ml-events       the four types the code always reads, unfiltered;
//   monitor-breach  RunStatusChanged whose run tags hold the breach tag (any status);
//   run-failed      RunStatusChanged whose status is failed, canceled or not responding.
// A failed monitor run matches both of the last two and is delivered twice with the same event
// id and type: the ledger's de-duplication makes the second delivery a no-op. Every other status
// change (Running, Queued, Completed, ...) is dropped by Event Grid, never billed or processed.
//
// Filter keys are written in the payload's casing (data.runTags, data.runStatus): Event Grid
// compares values case-insensitively, but does not document whether keys are, so the casing
// the event carries is the one that works either way.
//
// One system topic per source: the workspace may already have one (from the portal's Events
// blade, another team, or another environment of this service). The preprovision hook
// (infra/hooks/preprovision.sh) finds it and passes its name, resource group and current state
// (region, identities, tags) here; the topic is then PUT with the user-assigned identities it
// already has and its own tags unchanged, so nothing another owner set is lost, plus its
// system-assigned identity. A new topic gets our tags. (A PUT replaces identity and tags as a
// whole: that is why they are passed through.) The hook drops identities that no longer exist (a
// PUT naming a deleted identity fails) and refuses a topic listing more than Event Grid allows.
//
// Dead letters: after maxDeliveryAttempts or 24 hours, Event Grid writes the event to the
// dead-letter container as the topic's SYSTEM-assigned identity (deadLetterWithResourceIdentity,
// identity type SystemAssigned). A system topic holds one system-assigned and at most two
// user-assigned identities (Event Grid docs, "Enable managed identity for system topics"), so one
// user-assigned identity per environment would stop the third environment on a workspace, or any
// environment on a topic where another team already put two. The system-assigned one is shared by
// every environment; each gives it Storage Blob Data Contributor on its own dead-letter container
// only (deadletter-access.bicep), never the app's roles. Whoever can add an event subscription to
// this topic can make Event Grid write as that identity into those containers, and nowhere else.
// deliveryWithResourceIdentity does not apply: Event Grid invokes an AzureFunction destination
// through the function's resource id.
//
// The subscriptions are created only when deployEventSubscriptions is true: Event Grid validates an
// AzureFunction destination against the deployed function ("Destination endpoint not found"
// before the first code deployment); see infra/hooks/postdeploy.sh.

@description('Name of the system topic. A workspace has at most one; the preprovision hook finds it.')
param systemTopicName string

@description('Region of the ML workspace: a new system topic lives in its source\'s region.')
param location string

@description('Tags of a topic this deployment creates (an existing topic keeps its own).')
param tags object = {}

@description('Base64 of the JSON the preprovision hook wrote for an existing topic ({location, identityType, userAssignedIdentities, tags}); empty when the topic does not exist yet.')
param existingTopicState string = ''

@description('Resource id of the existing Azure ML workspace (the topic\'s source).')
param workspaceId string

@description('The environment\'s token: prefixes the subscription names.')
param nameToken string

@description('Resource id of the function app.')
param functionAppId string

@description('Name of the Event Grid trigger function that receives the events.')
param functionName string

@description('Resource id of the storage account that holds the dead-letter container.')
param deadLetterStorageAccountId string

@description('Dead-letter container name.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Whether to create the event subscriptions (the function must already be deployed).')
param deployEventSubscriptions bool = false

var topicState = empty(existingTopicState) ? {
  location: location
  identityType: 'None'
  userAssignedIdentities: {}
  tags: tags
} : json(base64ToString(existingTopicState))
// The topic's system-assigned identity (it dead-letters), and exactly the user-assigned identities
// the hook passed: this deployment adds none.
var keptUserAssigned = topicState.userAssignedIdentities
var topicIdentity = empty(keptUserAssigned) ? {
  type: 'SystemAssigned'
} : {
  type: 'SystemAssigned, UserAssigned'
  userAssignedIdentities: keptUserAssigned
}

var prefix = 'retrain-${nameToken}'
var eventSubscriptions = [
  {
    name: '${prefix}-ml-events'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.DatasetDriftDetected'
      'Microsoft.MachineLearningServices.RunCompleted'
      'Microsoft.MachineLearningServices.ModelRegistered'
      'Microsoft.MachineLearningServices.ModelDeployed'
    ]
    advancedFilters: []
  }
  {
    name: '${prefix}-monitor-breach'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.RunStatusChanged'
    ]
    advancedFilters: [
      {
        // The payload's casing: data.runTags.<tag> (see above).
        operatorType: 'IsNotNull'
        key: 'data.runTags.azureml_modelmonitor_threshold_breached'
      }
    ]
  }
  {
    name: '${prefix}-run-failed'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.RunStatusChanged'
    ]
    advancedFilters: [
      {
        // Values compare case-insensitively; the key is in the payload's casing.
        operatorType: 'StringIn'
        key: 'data.runStatus'
        values: [
          'Failed'
          'Canceled'
          'Cancelled'
          'NotResponding'
        ]
      }
    ]
  }
]

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: topicState.location
  tags: topicState.tags
  identity: topicIdentity
  properties: {
    source: workspaceId
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [for sub in eventSubscriptions: if (deployEventSubscriptions) {
  parent: systemTopic
  name: sub.name
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        // One event per invocation: the trigger binds a single EventGridEvent.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: sub.includedEventTypes
      advancedFilters: sub.advancedFilters
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}]

output systemTopicName string = systemTopic.name
output systemTopicId string = systemTopic.id
// The principal Event Grid dead-letters as: main.bicep gives it this environment's container role.
output systemTopicPrincipalId string = systemTopic.identity.principalId
output subscriptionNames array = [for sub in eventSubscriptions: sub.name]
