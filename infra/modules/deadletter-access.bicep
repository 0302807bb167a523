// The one role of the Event Grid system topic's system-assigned identity in this environment:
// Storage Blob Data Contributor on this environment's dead-letter container, nothing else.
// Deployed to the service's resource group after the topic (events.bicep), whose identity Azure
// creates with it; the principal id is known only then, so this is a module of its own.
//
// Blob Data Contributor is the role Event Grid documents for dead-lettering to a blob container
// with a managed identity (Event Grid docs, "Deliver events with a managed identity": dead-letter
// destination, Storage Blob Data Contributor). It is scoped to the container, not the account: the
// identity cannot reach the app's packages, ledger tables or host blobs.

@description('Name of the service\'s storage account (in this resource group).')
param storageAccountName string

@description('Name of the dead-letter container in that account.')
param deadLetterContainerName string

@description('Principal id of the system topic\'s system-assigned identity (shared by every environment on the topic).')
param topicPrincipalId string

var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

// Storage Blob Data Contributor on this environment's dead-letter container only, for the topic's
// system-assigned identity: what Event Grid needs to write dead-lettered events
// (deadLetterWithResourceIdentity, SystemAssigned), and all that identity holds here.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topicPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: topicPrincipalId
    roleDefinitionId: storageBlobDataContributor
    principalType: 'ServicePrincipal'
  }
}
