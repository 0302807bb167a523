// Monitoring Reader on the Azure ML workspace's SUBSCRIPTION, for the rollout health gates' platform
// metrics (RequestsPerMinute by deployment and status code, RequestLatency_P95), read through
// azure-monitor-querymetrics, i.e. the metrics:getBatch API.
//
// Why the subscription and not the workspace: metrics:getBatch is a subscription-level API; "even if
// users have Monitoring Reader on all the resources being queried in the batch API, the request fails
// if the user doesn't have Monitoring Reader on the subscription itself" (401) (Azure Monitor docs,
// "Migrate from the metrics API to the getBatch API", troubleshooting; the azure-monitor-querymetrics
// README asks for "authorization to read metrics data at the Azure subscription level"). Monitoring
// Reader is read only (*/read): no alert rules, no settings, no data of the resources themselves.
// Deployed with scope: subscription(mlSubscriptionId) from main.bicep; the deployer needs
// Microsoft.Authorization/roleAssignments/write on that subscription (Owner, User Access
// Administrator or Role Based Access Control Administrator there).
targetScope = 'subscription'

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

var monitoringReader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '43d0d8ad-25c7-4714-9337-8ba259a9fe05')

// The assignment's name is deterministic per subscription, identity and role, so each environment
// (each its own identity) has its own, and a second provision finds it again.
resource appMetricsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, appPrincipalId, monitoringReader)
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: monitoringReader
    principalType: 'ServicePrincipal'
  }
}
