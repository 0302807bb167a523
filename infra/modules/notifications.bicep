// The notification topic: an Event Grid custom topic that the service publishes every decision that
// changes something or fails to, as CloudEvents 1.0 (function_app/adapters/notifier.py). Teams
// subscribe to it with ordinary Event Grid subscriptions (Logic Apps for Teams or e-mail, a webhook,
// a queue): see infra/README.md. Local (key) authentication is off: the app's identity publishes
// with Microsoft Entra ID, holding EventGrid Data Sender on this topic only.

@description('Name of the custom topic.')
param name string

@description('Region of the topic.')
param location string

@description('Tags of the topic.')
param tags object = {}

@description('Principal (object) id of the function app\'s user-assigned identity, which publishes.')
param appPrincipalId string

var eventGridDataSender = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  // Its own identity, holding nothing here: a subscription may deliver with it (to a Service Bus
  // queue or a storage queue) once its owner grants it a role on that destination.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

// EventGrid Data Sender on the topic only: publish events, nothing else.
resource appSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, eventGridDataSender)
  scope: topic
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: eventGridDataSender
    principalType: 'ServicePrincipal'
  }
}

@description('The endpoint the service publishes to (RETRAIN_NOTIFY_TOPIC_ENDPOINT).')
output endpoint string = topic.properties.endpoint

@description('Resource id of the topic, to subscribe to.')
output id string = topic.id

output name string = topic.name
