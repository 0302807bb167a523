// Log Analytics Reader on the workspace that the rollout health gates query (azure-monitor-query):
// deployed to that workspace's resource group, which may differ from the service's.

@description('Name of the Log Analytics workspace (in this module\'s resource group).')
param workspaceName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

var logAnalyticsReader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '73c42c96-874c-492b-b04d-ab87d138a893')

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// Read (query) logs of this workspace only: the health gates compare the new deployment's error
// rate and latency with the old one's. Reader cannot change the workspace or its settings.
resource appLogReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, logAnalyticsReader)
  scope: workspace
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: logAnalyticsReader
    principalType: 'ServicePrincipal'
  }
}
