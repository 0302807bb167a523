// Event Grid: the system topic of the existing Azure ML workspace, and the subscriptions that
// deliver its events to the app's Event Grid trigger. Deployed to the workspace's resource group.
//
// Which events, and why three subscriptions. The code acts on five event types, but on
// RunStatusChanged only when the run carries the model-monitor breach tag or the run failed or was
// canceled. Advanced filters in one subscription are ANDed and apply to every event type of that
// subscription, and "breach tag present OR status failed" is an OR across two keys, which one
// subscription cannot express. So:
//   retrain-ml-events       the four types the code always reads, unfiltered;
//   retrain-monitor-breach  RunStatusChanged whose run tags hold the breach tag (any status);
//   retrain-run-failed      RunStatusChanged whose status is failed, canceled or not responding.
// A failed monitor run matches both of the last two and is delivered twice with the same event
// id and type: the ledger's de-duplication makes the second delivery a no-op. Every other status
// change (Running, Queued, Completed, ...) is dropped by Event Grid, never billed or processed.
//
// Dead letters: after maxDeliveryAttempts or 24 hours, Event Grid writes the event to the
// dead-letter container as the user-assigned identity (deadLetterWithResourceIdentity).
// deliveryWithResourceIdentity does not apply: Event Grid invokes an AzureFunction destination
// through the function's resource id, and managed-identity delivery is offered only for Service
// Bus, Event Hubs, Storage queues and webhooks.
//
// The subscriptions are created only when deployEventSubscriptions is true: Event Grid validates an
// AzureFunction destination against the deployed function, which does not exist before the first
// code deployment (see infra/hooks/postdeploy.sh).

@description('Name of the system topic. A workspace has at most one; reuse its name if it exists.')
param systemTopicName string

@description('Region of the ML workspace: a system topic lives in its source\'s region.')
param location string

@description('Tags of the system topic.')
param tags object = {}

@description('Resource id of the existing Azure ML workspace (the topic\'s source).')
param workspaceId string

@description('Resource id of the user-assigned identity the topic dead-letters as.')
param identityId string

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

var eventSubscriptions = [
  {
    name: 'retrain-ml-events'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.DatasetDriftDetected'
      'Microsoft.MachineLearningServices.RunCompleted'
      'Microsoft.MachineLearningServices.ModelRegistered'
      'Microsoft.MachineLearningServices.ModelDeployed'
    ]
    advancedFilters: []
  }
  {
    name: 'retrain-monitor-breach'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.RunStatusChanged'
    ]
    advancedFilters: [
      {
        // The key as Microsoft's model-monitoring guide writes it for this filter.
        operatorType: 'IsNotNull'
        key: 'data.RunTags.azureml_modelmonitor_threshold_breached'
      }
    ]
  }
  {
    name: 'retrain-run-failed'
    includedEventTypes: [
      'Microsoft.MachineLearningServices.RunStatusChanged'
    ]
    advancedFilters: [
      {
        // String comparisons in Event Grid filters are case-insensitive.
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
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
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
        type: 'UserAssigned'
        userAssignedIdentity: identityId
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
