// The existing Azure Machine Learning workspace: the service's roles on it, and its id and region
// (a new Event Grid system topic must be created in the workspace's region, and the metrics batch
// API is asked in it). Deployed to the
// workspace's resource group, which is not the service's.
//
// The workspace role is, by default, a custom role made for this environment that holds exactly the
// Azure ML actions the service's adapters perform (function_app/adapters/permissions.py lists them
// per operation, with sources; tests/test_permissions.py checks that this role grants each one and
// nothing on the deny list). AzureML Data Scientist, the fallback (workspaceRole =
// 'AzureMLDataScientist', for deployers who may assign roles but not create role definitions),
// would also let the identity delete any endpoint, model or job and call listStorageAccountKeys,
// connections/listsecrets and onlineEndpoints/listKeys.
// Creating a role definition needs Microsoft.Authorization/roleDefinitions/write (Owner or User
// Access Administrator); Role Based Access Control Administrator can only assign roles.

@description('Name of the existing Azure ML workspace.')
param workspaceName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('custom: a role with only the actions the service uses; AzureMLDataScientist: the broader built-in role.')
@allowed([
  'custom'
  'AzureMLDataScientist'
])
param workspaceRole string = 'custom'

@description('The environment\'s token: names the custom role, so each environment has its own.')
param nameToken string

@description('Name of the workspace\'s storage account (in the workspace\'s resource group) where data assets of smoke requests are; empty: none read.')
param workspaceStorageAccountName string = ''

@description('Name of the workspace datastore that holds the data asset a batch comparison scores (deploy.batch_endpoint.compare.data): the identity may list that datastore\'s secrets, which invoking a batch endpoint needs; empty: none.')
param batchDatastoreName string = ''

var useCustomRole = workspaceRole == 'custom'
var customRoleName = guid(resourceGroup().id, workspaceName, 'retrain-service', nameToken)
var datastoreRoleName = guid(resourceGroup().id, workspaceName, 'retrain-batch-datastore-secrets', nameToken)
var storageBlobDataReader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')
var azureMLDataScientist = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f6c7c914-8db3-469d-8ca1-694a8f32e121')

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

// Action names from Microsoft's list of Microsoft.MachineLearningServices operations (Azure RBAC,
// "Azure permissions for AI + machine learning") and the Azure ML "Manage roles" page (actions per
// scenario: submitting V2 jobs, online endpoints, MLflow). No wildcards; grouped by what uses them.
resource serviceRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (useCustomRole) {
  name: customRoleName
  properties: {
    roleName: 'Retrain service ${nameToken} (${workspaceName})'
    description: 'What the retrain service does in the Azure ML workspace ${workspaceName}: submit and read pipeline jobs, read components and data, read and register models, create, shift and retire online deployments, invoke them for a smoke test, switch batch endpoints and run their comparison jobs, retarget model monitors, read MLflow runs. No keys, no secrets of connections, no workspace or compute changes.'
    type: 'customRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // MLClient and the MLflow tracking URI (workspaces.get)
          'Microsoft.MachineLearningServices/workspaces/read'
          // submit_retrain, job_status, the gate's run facts, MLflow runs/get and runs/search
          'Microsoft.MachineLearningServices/workspaces/jobs/read'
          'Microsoft.MachineLearningServices/workspaces/jobs/write'
          'Microsoft.MachineLearningServices/workspaces/experiments/read'
          'Microsoft.MachineLearningServices/workspaces/experiments/runs/read'
          'Microsoft.MachineLearningServices/workspaces/metadata/artifacts/write'
          'Microsoft.MachineLearningServices/workspaces/environments/build/action'
          'Microsoft.MachineLearningServices/workspaces/environments/readSecrets/action'
          'Microsoft.MachineLearningServices/workspaces/components/read'
          'Microsoft.MachineLearningServices/workspaces/components/versions/read'
          'Microsoft.MachineLearningServices/workspaces/environments/read'
          'Microsoft.MachineLearningServices/workspaces/environments/versions/read'
          'Microsoft.MachineLearningServices/workspaces/codes/read'
          'Microsoft.MachineLearningServices/workspaces/codes/versions/read'
          'Microsoft.MachineLearningServices/workspaces/data/read'
          'Microsoft.MachineLearningServices/workspaces/data/versions/read'
          // start_deploy: a candidate that carries a data collector registers a data-asset version per collection
          'Microsoft.MachineLearningServices/workspaces/data/versions/write'
          'Microsoft.MachineLearningServices/workspaces/datastores/read'
          'Microsoft.MachineLearningServices/workspaces/computes/read'
          // start_deploy: the champion, the candidate, registering it
          'Microsoft.MachineLearningServices/workspaces/models/read'
          'Microsoft.MachineLearningServices/workspaces/models/write'
          'Microsoft.MachineLearningServices/workspaces/models/versions/read'
          'Microsoft.MachineLearningServices/workspaces/models/versions/write'
          // start_deploy, deployment_state, endpoint_traffic, set_traffic, retirement
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/read'
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write'
          'Microsoft.MachineLearningServices/workspaces/onlineendpoints/operationsstatus/read'
          'Microsoft.MachineLearningServices/workspaces/onlineendpoints/operationresults/read'
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/read'
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/write'
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/delete'
          'Microsoft.MachineLearningServices/workspaces/onlineendpoints/deployments/operationsstatus/read'
          'Microsoft.MachineLearningServices/workspaces/onlineendpoints/deployments/operationresults/read'
          // batch endpoints (deploy.batch_endpoint): the candidate batch deployment, the default switched,
          // retirement (AzureMLBatch in function_app/adapters/azureml/batch.py)
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/read'
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/write'
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/read'
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/write'
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/delete'
          // a batch candidate's comparison (batch_endpoint.compare): a batch job of each deployment, started as
          // the service ("create jobs in batch inference endpoints and deployments", Authorization on batch endpoints)
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/jobs/write'
          'Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/jobs/write'
          // ... and one still running when the comparison ends without it (timed out, the other failed, rolled back)
          'Microsoft.MachineLearningServices/workspaces/jobs/cancel/action'
          // model monitors follow the promoted deployment (schedules)
          'Microsoft.MachineLearningServices/workspaces/schedules/read'
          'Microsoft.MachineLearningServices/workspaces/schedules/write'
          // the smoke test: invoking a deployment with an Entra token (endpoints with aad_token auth),
          // a data plane operation whose role permission goes in actions, see the end of this file
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action'
        ]
        notActions: []
      }
    ]
  }
}

// A role definition is a subscription-level resource: its id is the subscription form, whichever
// resource group deployed it.
var workspaceRoleId = useCustomRole ? subscriptionResourceId('Microsoft.Authorization/roleDefinitions', customRoleName) : azureMLDataScientist

// The workspace role (see the top of this file): exactly the Azure ML actions the service
// performs, or AzureML Data Scientist when the deployer cannot create role definitions.
resource appWorkspaceRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, workspaceRoleId)
  scope: workspace
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: workspaceRoleId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    serviceRole
  ]
}

resource workspaceStorage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = if (!empty(workspaceStorageAccountName)) {
  name: empty(workspaceStorageAccountName) ? 'none' : workspaceStorageAccountName
}

// Storage Blob Data Reader on the workspace's storage account (its default datastore), when named: the
// smoke test's sample requests kept in a data asset (deploy.rollout.smoke.requests: {data: ...}) are
// read from it with the service's identity. The service never lists a datastore's key or SAS token
// (the workspace role never holds datastores/listsecrets/action), so without this role such a smoke test fails
// saying to set workspaceStorageAccountName.
resource appSampleReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workspaceStorageAccountName)) {
  name: guid(workspaceStorage.id, appPrincipalId, storageBlobDataReader)
  scope: workspaceStorage
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: storageBlobDataReader
    principalType: 'ServicePrincipal'
  }
}

// Datastore secrets for a batch comparison (deploy.batch_endpoint.compare), on the one datastore named. "To
// invoke a batch endpoint ... the identity needs ... Lists datastore secrets" (Azure ML docs, "Authorization on
// batch endpoints", and Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action in its list
// of actions for invoking); the batch job reads a data asset of a datastore with credentials through them
// (same page, "Configure compute clusters for data access"). The workspace role never holds this action
// (function_app/adapters/permissions.py, NEVER_GRANTED): it would give every datastore's account key or SAS.
// Assigned on the datastore itself, the narrowest scope ARM takes for a role assignment on it; whether Azure
// ML's check at invocation accepts a datastore-scoped assignment is not documented (docs/azure-behaviour.md):
// a refusal is a recorded failed comparison naming the action and scope.
resource datastoreRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(batchDatastoreName)) {
  name: datastoreRoleName
  properties: {
    roleName: 'Retrain batch datastore secrets ${nameToken} (${workspaceName})'
    description: 'What invoking a batch endpoint needs of the datastore ${batchDatastoreName} of the Azure ML workspace ${workspaceName}: list its secrets. Nothing else.'
    type: 'customRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action'
        ]
        notActions: []
      }
    ]
  }
}

resource batchDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' existing = if (!empty(batchDatastoreName)) {
  parent: workspace
  name: empty(batchDatastoreName) ? 'none' : batchDatastoreName
}

var datastoreRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', datastoreRoleName)

// The datastore-secrets role (see above), on the comparison data's datastore alone.
resource appDatastoreSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(batchDatastoreName)) {
  name: guid(batchDatastore.id, appPrincipalId, datastoreRoleId)
  scope: batchDatastore
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: datastoreRoleId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    datastoreRole
  ]
}

// Monitoring Reader for the platform metrics is not assigned here: the metrics batch API needs it on
// the subscription itself, not on the workspace (modules/metrics-reader.bicep).

output id string = workspace.id
// The workspace's region: its online endpoints are in it, so the metrics batch API is asked there
// (RETRAIN_METRICS_REGION), and a new system topic is created there.
output location string = workspace.location

// onlineEndpoints/score/action: Azure ML calls it a data plane action, but roles grant it under
// actions, not dataActions (AzureML Data Scientist through its wildcard workspace actions; the
// custom scoring role in the Azure ML docs, Authenticate clients for online endpoints, through a
// wildcard of the endpoint actions).
