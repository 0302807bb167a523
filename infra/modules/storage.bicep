// The service's storage account: the Functions host storage (AzureWebJobsStorage, identity-based),
// the Flex Consumption deployment package container, the dead-letter container that Event Grid
// writes undeliverable events to, and the Table service that holds the ledger.
// No account keys: shared key access is disabled, so every client authenticates with Entra ID.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the storage account.')
param location string

@description('Tags of the storage account.')
param tags object = {}

@description('Container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Container that Event Grid dead-letters undeliverable events into.')
param deadLetterContainerName string

@description('Replication of the account. The ledger is the audit trail and the dead letters are events not yet handled: keep a copy in the paired region (GRS, available in every region; GZRS where zones exist).')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Days a deleted blob (a dead-lettered event, a deployment package) can still be restored.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Flex Consumption without virtual network integration reaches its host storage over the
      // public endpoint, so the account cannot deny by default (see .checkov.yaml, CKV_AZURE_35).
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The ledger's tables are created by the app on first use (Storage Table Data Contributor allows
// it), under the names the code derives from RETRAIN_TABLE_PREFIX.
resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deadLetterContainerId string = deadLetterContainer.id
output deploymentContainerName string = deploymentContainer.name
output deadLetterContainerName string = deadLetterContainer.name
output tableServiceId string = tableService.id
