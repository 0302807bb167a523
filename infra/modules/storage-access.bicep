// Data-plane roles on the service's storage account. Every assignment is to a service principal
// (the user-assigned identity); names are deterministic, so redeploying never duplicates them.

@description('Name of the service\'s storage account (in this resource group).')
param storageAccountName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

var storageBlobDataOwner = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
var storageTableDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

// Storage Blob Data Owner on the account: the Functions host with identity-based
// AzureWebJobsStorage creates and leases its own containers (keys, timer locks), and Flex
// Consumption reads the deployment package with this identity. Microsoft documents Blob Data Owner
// as the role the host needs; it also lets the service read dead-lettered events for replay.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: storageBlobDataOwner
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor on the account: the ledger (create its tables, read and write
// entities with ETag-conditional updates). No control-plane rights, no keys.
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: storageTableDataContributor
    principalType: 'ServicePrincipal'
  }
}

// No Storage Queue Data Contributor: the app has no queue or blob (polling) triggers, and the host
// keeps its keys and timer locks in blobs, so nothing here reads or writes queues.

// The topic's role on the dead-letter container is in deadletter-access.bicep: its principal
// exists only once the topic does.
