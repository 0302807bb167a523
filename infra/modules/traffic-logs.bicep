// Diagnostic settings that send each named online endpoint's AmlOnlineEndpointTrafficLog to the Log
// Analytics workspace the rollout health gates query. Only for the endpoints of models whose
// policy says `deploy.rollout.health.source: logs` (the default, `metrics`, needs no setting): the
// preprovision hook reads the policy and passes their names. Deployed to the workspace's resource
// group; the endpoints must exist.
//
// The traffic log starts flowing some time after the setting is created ("it may take up to an
// hour", Azure ML docs, "Monitor online endpoints"): until then a rollout finds no traffic data
// and the policy's health.on_no_traffic decides. Azure Monitor refuses a second setting on the same
// resource that sends the same category to the same workspace: if an endpoint already has one,
// leave that endpoint out of the logs source or point the health workspace at the same place.

@description('Name of the existing Azure ML workspace that holds the endpoints.')
param workspaceName string

@description('Names of the online endpoints to send the traffic log of.')
param endpointNames array

@description('Resource id of the Log Analytics workspace the health gates query.')
param logAnalyticsWorkspaceId string

@description('Name of the diagnostic setting on each endpoint (it carries the environment\'s token).')
param settingName string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource endpoints 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-10-01' existing = [for name in endpointNames: {
  parent: workspace
  name: name
}]

resource trafficLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [for (name, i) in endpointNames: {
  name: settingName
  scope: endpoints[i]
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    // Resource-specific table AmlOnlineEndpointTrafficLog, which the health gates query; without
    // it (null is the default) the rows go to the shared AzureDiagnostics table instead.
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AmlOnlineEndpointTrafficLog'
        enabled: true
      }
    ]
  }
}]
