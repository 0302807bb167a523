// The Azure ML registry an upstream (dev) environment shares its promoted candidates into (the policy's
// models.<name>.environment with role upstream, docs/environments.md): the service finds the
// registry, reads a version (is it shared already?) and imports the promoted workspace version into it.
// Deployed to the registry's resource group, in the registry's subscription.
//
// A custom role with exactly registries/read, registries/assets/read and registries/assets/write:
// the built-in AzureML Registry User grants registries/assets/*, which also deletes every asset of
// the registry every environment reads from.

@description('Name of the existing Azure ML registry.')
param registryName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('The environment\'s token: names the custom role, so each environment has its own.')
param nameToken string

var publisherRoleName = guid(resourceGroup().id, registryName, 'retrain-registry-publisher', nameToken)

resource registry 'Microsoft.MachineLearningServices/registries@2024-10-01' existing = {
  name: registryName
}

// Action names from Microsoft's list of Microsoft.MachineLearningServices operations (Azure RBAC,
// "Azure permissions for AI + machine learning"); no wildcards.
resource publisherRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: publisherRoleName
  properties: {
    roleName: 'Retrain registry publisher ${nameToken} (${registryName})'
    description: 'What the retrain service does in the Azure ML registry ${registryName}: find it, read its model versions and import promoted ones. No deletes.'
    type: 'customRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // MLClient(registry_name=...): the registry discovery service
          'Microsoft.MachineLearningServices/registries/read'
          // is the promoted version shared already (models.get, versions list)
          'Microsoft.MachineLearningServices/registries/assets/read'
          // the import of the promoted workspace version (POST .../registries/<r>/import)
          'Microsoft.MachineLearningServices/registries/assets/write'
        ]
        notActions: []
      }
    ]
  }
}

var publisherRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', publisherRoleName)

// The registry publisher (see the top of this file), on the registry alone: promotions shared into it.
resource appRegistryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, publisherRoleId)
  scope: registry
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: publisherRoleId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    publisherRole
  ]
}
