// A user-assigned managed identity: the app's (Azure ML, Tables, Blobs, Application Insights).
// The Event Grid system topic dead-letters with its own system-assigned identity (events.bicep).
// A user-assigned identity exists before the app and the topic, so its role assignments can be
// made (and given time to propagate) before anything uses them, and its client id can be written
// into the app settings in the same deployment.

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags of the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
