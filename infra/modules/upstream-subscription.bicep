// A downstream (prod) environment's subscription to its upstream (dev) environment's notification
// topic (notifications.bicep of the dev environment's deployment): the dev service's promotions,
// CloudEvents of type retrain.decision.promote.submitted, delivered to this environment's Event Grid
// trigger function, which picks the promoted registry version up (handlers/pickup.py;
// docs/environments.md). Deployed to the topic's resource group, in the dev subscription.
//
// Delivery: the topic's input schema is CloudEvents 1.0, and a CloudEvents topic delivers CloudEvents
// only (Event Grid docs, "CloudEvents v1.0 schema with Azure Event Grid": no CloudEvents-in, Event Grid-out
// conversion); the trigger binds both schemas. An AzureFunction destination needs no validation handshake
// from the function: Event Grid checks, when the subscription is created, that whoever creates it has
// write access to the handler ("Permissions for event subscriptions"; the action it asks of a function
// app is not documented): the identity running this environment's `azd provision`, which deployed the
// function app, and Event Grid keeps the function's key itself (docs/azure-behaviour.md). That
// identity also needs Microsoft.EventGrid/eventSubscriptions/write on the dev topic: EventGrid
// EventSubscription Contributor on that topic only, granted by the dev environment's owner
// (docs/environments.md). The function app's own identity needs nothing here, and the subscription
// gives the prod environment no right in the dev subscription.
//
// No dead-letter destination: writing dead letters would need a role for the dev topic's identity on
// this environment's storage, across subscriptions; a promotion Event Grid gives up on after its
// retries is found by the reconciler's poll of the registry instead (the fallback the pickup needs
// anyway: a registry publishes no events of its own).
//
// Created only when deployEventSubscriptions is true: Event Grid validates an AzureFunction
// destination against the deployed function ("Destination endpoint not found" before the first code
// deployment); see infra/hooks/postdeploy.sh.

@description('Name of the upstream (dev) environment\'s notification topic, in this deployment\'s resource group.')
param topicName string

@description('The environment\'s token: prefixes the subscription\'s name (one per azd environment).')
param nameToken string

@description('Resource id of this environment\'s function app.')
param functionAppId string

@description('Name of the Event Grid trigger function that receives the events.')
param functionName string

@description('Delivery attempts before Event Grid gives an event up (the registry poll catches it).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Whether to create the subscription (the function must already be deployed).')
param deployEventSubscriptions bool = false

// The one event type a downstream service picks up: an upstream promotion (handlers/signals.py, UPSTREAM_PROMOTED).
var promotionType = 'retrain.decision.promote.submitted'

resource topic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: topicName
}

resource promotions 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (deployEventSubscriptions) {
  parent: topic
  name: 'retrain-${nameToken}-upstream-promotions'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        // One event per invocation: the trigger binds a single event.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: [
        promotionType
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output subscriptionName string = 'retrain-${nameToken}-upstream-promotions'
