// The Azure ML registry a downstream (prod) environment serves promoted models from (the policy's
// models.<name>.environment, docs/environments.md): the service reads a champion's registry version
// (its tags carry the metric the gate compares). Deployed to the registry's resource group, in the
// registry's subscription, which may be neither the app's nor the workspace's.
//
// The role is a custom role with exactly what the service does there: discover the registry
// (registries/read) and read its model versions (registries/assets/read). The built-in AzureML
// Registry User (1823dd4f-9b8c-4ab6-ab4e-7397a3684615) grants registries/assets/*: it could also
// write and delete every model, environment and component of the registry that every environment
// reads from. Creating the role needs Microsoft.Authorization/roleDefinitions/write on that group.

@description('Name of the existing Azure ML registry.')
param registryName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('The environment\'s token: names the custom role, so each environment has its own.')
param nameToken string

var readerRoleName = guid(resourceGroup().id, registryName, 'retrain-registry-reader', nameToken)

resource registry 'Microsoft.MachineLearningServices/registries@2024-10-01' existing = {
  name: registryName
}

// Action names from Microsoft's list of Microsoft.MachineLearningServices operations (Azure RBAC,
// "Azure permissions for AI + machine learning"); no wildcards.
resource readerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: readerRoleName
  properties: {
    roleName: 'Retrain registry reader ${nameToken} (${registryName})'
    description: 'What the retrain service does in the Azure ML registry ${registryName}: find it and read its model versions. No writes, no deletes.'
    type: 'customRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // MLClient(registry_name=...): the registry discovery service
          'Microsoft.MachineLearningServices/registries/read'
          // models.get of a champion served from the registry
          'Microsoft.MachineLearningServices/registries/assets/read'
        ]
        notActions: []
      }
    ]
  }
}

var readerRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleName)

// The registry reader (see the top of this file), on the registry alone: the champion's registry version.
resource appRegistryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, readerRoleId)
  scope: registry
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: readerRoleId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    readerRole
  ]
}
