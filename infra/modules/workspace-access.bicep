// The existing Azure Machine Learning workspace: the service's role on it, and its id and region
// (the Event Grid system topic must be created in the workspace's region). Deployed to the
// workspace's resource group, which is not the service's.

@description('Name of the existing Azure ML workspace.')
param workspaceName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

var azureMLDataScientist = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f6c7c914-8db3-469d-8ca1-694a8f32e121')

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

// AzureML Data Scientist on the workspace: everything the service does (submit pipeline jobs,
// read runs and models, register models, create online deployments and shift endpoint traffic)
// is a workspaces/*/write or */action it allows. Not Contributor: Contributor could also delete
// or reconfigure the workspace, create or delete compute, list the workspace's keys and touch every
// other resource in scope; Data Scientist excludes exactly those (workspaces/write, delete,
// computes/*/write and delete, listKeys).
resource appDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, azureMLDataScientist)
  scope: workspace
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: azureMLDataScientist
    principalType: 'ServicePrincipal'
  }
}

output id string = workspace.id
output location string = workspace.location

