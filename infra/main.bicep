// The retrain service: one `azd up` deploys all of it. See infra/README.md.
//
// Resource group of the service: identity, storage, monitoring, Flex Consumption function app.
// Resource group of the existing Azure ML workspace: the service's role on the workspace and the
// workspace's Event Grid system topic with its subscriptions to the app.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: names the resource group and seeds unique resource names.')
param environmentName string

// Regions that offer Flex Consumption, as Microsoft's azd template for it lists them
// (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep), without the canary
// region eastus2euap. `az functionapp list-flexconsumption-locations` gives today's list.
@minLength(1)
@description('Region of the service\'s resources; it must offer the Flex Consumption plan.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the existing Azure Machine Learning workspace the service watches and acts on.')
param mlWorkspaceName string

@description('Resource group of that workspace.')
param mlWorkspaceResourceGroup string

@description('Subscription of that workspace; empty means the subscription of this deployment.')
param mlWorkspaceSubscriptionId string = ''

@description('Azure ML registry this environment serves promoted models from (a downstream, prod, environment: docs/environments.md); empty: none.')
param registryName string = ''

@description('downstream (prod): reads the registry\'s versions; upstream (dev): shares promotions into it.')
@allowed([
  'downstream'
  'upstream'
])
param registryRole string = 'downstream'

@description('Resource group of that registry; empty means the workspace\'s.')
param registryResourceGroup string = ''

@description('Subscription of that registry; empty means the workspace\'s.')
param registrySubscriptionId string = ''

@description('A downstream (prod) environment: resource id of the upstream (dev) environment\'s notification topic (its RETRAIN_NOTIFY_TOPIC_ID output), which the prod function subscribes to for promotions (docs/environments.md); empty: none.')
param upstreamTopicId string = ''

@description('Policy file, relative to the app root, deployed with the code (RETRAIN_POLICY_PATH). The predeploy hook refuses to deploy without a valid one.')
param policyPath string = 'policy.yaml'

@description('azureml acts on the workspace; dryrun only renders what it would submit (RETRAIN_BACKEND).')
@allowed([
  'azureml'
  'dryrun'
])
param retrainBackend string = 'azureml'

@description('Whether manual requests may send force=true to pass cooldown and in-flight holds (RETRAIN_ALLOW_FORCE).')
param allowForce bool = false

@secure()
@minLength(32)
@description('Secret the retraining jobs are named with (RETRAIN_JOB_NAME_KEY): the preprovision hook generates it once per azd environment.')
param jobNameKey string

@description('NCRONTAB schedule of the reconciler timer (RETRAIN_RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */5 * * * *'

@description('Days the ledger keeps event and decision records (RETRAIN_RETENTION_DAYS).')
@minValue(1)
param retentionDays int = 30

@description('Minutes a submitted retraining job may run before the reconciler asks whether its end event was missed (RETRAIN_JOB_GRACE_MINUTES).')
@minValue(1)
param jobGraceMinutes int = 15

@description('Create the Event Grid subscriptions to the app. The postdeploy hook turns this on once the function exists.')
param deployEventSubscriptions bool = false

@description('Resource id of the Log Analytics workspace the rollout health gates query; empty means the one created here.')
param healthLogAnalyticsWorkspaceId string = ''

@description('Name of the workspace\'s Event Grid system topic; empty derives one. The preprovision hook sets it to the topic the workspace already has, if any.')
param systemTopicName string = ''

@description('Resource group of that topic; empty means the workspace\'s. Set by the preprovision hook.')
param systemTopicResourceGroup string = ''

@description('Base64 JSON of the existing topic\'s region, identities and tags, written by the preprovision hook; empty when there is no topic yet.')
param systemTopicState string = ''

@description('custom: a role with exactly the Azure ML actions the service uses (needs roleDefinitions/write to create); AzureMLDataScientist: the broader built-in role.')
@allowed([
  'custom'
  'AzureMLDataScientist'
])
param workspaceRole string = 'custom'

@description('The workspace\'s storage account (in its resource group), where data assets of smoke requests are (deploy.rollout.smoke.requests: {data: ...}): the identity gets Storage Blob Data Reader on it; empty: none.')
param workspaceStorageAccountName string = ''

@description('The workspace datastore holding the data asset a batch comparison scores (deploy.batch_endpoint.compare.data): the identity may list its secrets, which invoking a batch endpoint needs; empty: none.')
param batchDatastoreName string = ''

@description('E-mail address the alerts on lost events and failed invocations notify; empty: no e-mail.')
param alertEmail string = ''

@description('Comma-separated online endpoints whose AmlOnlineEndpointTrafficLog goes to the health workspace (models with rollout health source logs); the preprovision hook reads them from the policy.')
param trafficLogEndpoints string = ''

@description('Enable the Event Grid webhook route POST /api/events in Azure. The subscriptions use the Event Grid trigger, so it is off unless something posts there (a webhook subscription, a manual replay).')
param enableEventsWebhook bool = false

@description('Event Grid delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Client (application) id of the Entra app registration for sign-in in front of the manual API (App Service authentication); empty: off.')
param authClientId string = ''

@description('OpenID issuer of that registration; empty: this tenant\'s v2.0 issuer.')
param authIssuer string = ''

@description('App role a signed-in caller needs for manual requests (RETRAIN_OPERATOR_ROLE).')
param operatorRole string = 'Retrain.Operator'

@description('Replication of the storage account: Standard_GRS, Standard_RAGRS, Standard_GZRS or Standard_RAGZRS.')
param storageSkuName string = 'Standard_GRS'

@description('Resource id of a storage account where new training data lands (the models\' retrain.on.data.blobs); empty: none. Its system topic and a BlobCreated subscription per entry of newDataPrefixes are created.')
param newDataStorageAccountId string = ''

@description('Comma-separated container/prefix pairs of that account that models retrain on, as retrain.on.data.blobs names them (each prefix a folder, ending with a slash), e.g. "training/diabetes/,labels".')
param newDataPrefixes string = ''

@description('Name of that account\'s existing system topic (an account has at most one); empty: evgt-<account>.')
param newDataTopicName string = ''

var tags = {
  'azd-env-name': environmentName
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var mlSubscriptionId = empty(mlWorkspaceSubscriptionId) ? subscription().subscriptionId : mlWorkspaceSubscriptionId
var registrySubscription = empty(registrySubscriptionId) ? mlSubscriptionId : registrySubscriptionId
var registryGroup = empty(registryResourceGroup) ? mlWorkspaceResourceGroup : registryResourceGroup
var registryReads = !empty(registryName) && registryRole == 'downstream'
// A downstream environment's subscription to its upstream's notification topic: where that topic is, from its id.
var upstreamSubscribes = !empty(upstreamTopicId)
// (Without one, a placeholder id of the same shape: no expression here indexes an empty string.)
var upstreamTopicParts = split(upstreamSubscribes ? upstreamTopicId : '/subscriptions/${subscription().subscriptionId}/resourceGroups/rg-${environmentName}/providers/Microsoft.EventGrid/topics/none', '/')
var upstreamTopicSubscription = upstreamTopicParts[2]
var upstreamTopicGroup = upstreamTopicParts[4]
var registryPublishes = !empty(registryName) && registryRole == 'upstream'
var topicName = empty(systemTopicName) ? 'evgt-${replace(mlWorkspaceName, '_', '-')}' : systemTopicName
var topicResourceGroup = empty(systemTopicResourceGroup) ? mlWorkspaceResourceGroup : systemTopicResourceGroup
var trafficLogEndpointNames = empty(trafficLogEndpoints) ? [] : split(trafficLogEndpoints, ',')
// New data: ARM evaluates only the branch of a conditional that is taken, so an empty id never reaches the index expressions.
var newData = !empty(newDataStorageAccountId)
var newDataSubscription = newData ? split(newDataStorageAccountId, '/')[2] : subscription().subscriptionId
var newDataResourceGroup = newData ? split(newDataStorageAccountId, '/')[4] : 'rg-${environmentName}'
var newDataAccountName = newData ? last(split(newDataStorageAccountId, '/')) : ''
var newDataSources = empty(newDataPrefixes) ? [] : split(newDataPrefixes, ',')

// The service name in azure.yaml; azd deploys the code to the app tagged with it.
var serviceName = 'retrain'
// The Event Grid trigger function the app registers (function_app/triggers/events.py).
var eventGridFunctionName = 'on_workspace_event'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletter'
// Where the health gates' Log Analytics workspace lives. ARM evaluates only the branch of a
// conditional that is taken, so an empty id never reaches the index expressions.
var externalHealthWorkspace = !empty(healthLogAnalyticsWorkspaceId)
var healthWorkspaceSubscription = externalHealthWorkspace ? split(healthLogAnalyticsWorkspaceId, '/')[2] : subscription().subscriptionId
var healthWorkspaceResourceGroup = externalHealthWorkspace ? split(healthLogAnalyticsWorkspaceId, '/')[4] : 'rg-${environmentName}'
var healthWorkspaceId = externalHealthWorkspace ? healthLogAnalyticsWorkspaceId : monitoring.outputs.logAnalyticsId

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-retrain-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-retrain-${resourceToken}'
    applicationInsightsName: 'appi-retrain-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stretrain${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

// The service's settings, by the names the code reads (function_app/settings.py, SETTINGS).
// tests/test_infra_consistency.py checks that every setting marked azure=True is here.
var appSettings = {
  AZURE_CLIENT_ID: identity.outputs.clientId
  RETRAIN_POLICY_PATH: policyPath
  RETRAIN_LEDGER: 'table'
  RETRAIN_TABLES_ACCOUNT_URL: storage.outputs.tableEndpoint
  RETRAIN_TABLE_PREFIX: 'retrain'
  RETRAIN_RETENTION_DAYS: string(retentionDays)
  RETRAIN_JOB_GRACE_MINUTES: string(jobGraceMinutes)
  RETRAIN_BACKEND: retrainBackend
  RETRAIN_DEADLINE_SECONDS: '25'
  // Job names are a keyed digest (handlers/jobnames.py): no workspace user can predict the next one.
  RETRAIN_JOB_NAME_KEY: jobNameKey
  RETRAIN_ALLOW_FORCE: allowForce ? 'true' : 'false'
  RETRAIN_RECONCILE_SCHEDULE: reconcileSchedule
  RETRAIN_DEADLETTER_CONTAINER: deadLetterContainerName
  RETRAIN_BLOB_ACCOUNT_URL: storage.outputs.blobEndpoint
  AZUREML_SUBSCRIPTION_ID: mlSubscriptionId
  AZUREML_RESOURCE_GROUP: mlWorkspaceResourceGroup
  AZUREML_WORKSPACE_NAME: mlWorkspaceName
  // The rollout health check queries this workspace (Log Analytics Reader: log-analytics-reader.bicep).
  RETRAIN_LOG_ANALYTICS_WORKSPACE_ID: healthWorkspaceId
  // Rollout health from platform metrics by default (no setup). The metrics batch API is asked in the
  // region of the resources queried, the online endpoints, which are in the workspace's region, not
  // the app's; asked elsewhere it answers empty series, read as no traffic (Azure Monitor docs,
  // Migrate from the metrics API to the getBatch API). Monitoring Reader: modules/metrics-reader.bicep.
  RETRAIN_HEALTH_SOURCE: 'metrics'
  RETRAIN_METRICS_REGION: workspaceAccess.outputs.location
  RETRAIN_METRICS_ENDPOINT: ''
  // Entra ID sign-in in front of the manual API: on exactly when authClientId configures App
  // Service authentication (functionapp.bicep, authsettingsV2). App settings are replaced whole on
  // every provision, so this follows the parameter, never a value set by hand.
  RETRAIN_APP_SERVICE_AUTH: empty(authClientId) ? 'false' : 'true'
  RETRAIN_OPERATOR_ROLE: operatorRole
  // Every decision that changes something or fails is published here as a CloudEvent, with the
  // identity (EventGrid Data Sender on the topic: modules/notifications.bicep).
  RETRAIN_NOTIFY_TOPIC_ENDPOINT: notifications.outputs.endpoint
  // A notification the topic keeps refusing is dead-lettered in the ledger after this many attempts,
  // or after this many hours whatever failed (retrain notifications --dead lists them).
  RETRAIN_NOTIFY_MAX_ATTEMPTS: '10'
  RETRAIN_NOTIFY_MAX_AGE_HOURS: '24'
  // The Event Grid webhook route's function (events_webhook in function_app/triggers/events.py) is
  // disabled in Azure unless enableEventsWebhook: the host skips a disabled function, so
  // POST /api/events answers 404. POST /api/alerts (action groups) stays on.
  'AzureWebJobs.events_webhook.Disabled': enableEventsWebhook ? 'false' : 'true'
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-retrain-${resourceToken}'
    planName: 'plan-retrain-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    appSettings: appSettings
    authClientId: authClientId
    authIssuer: authIssuer
  }
}

// The notification topic (CloudEvents 1.0, local auth off) and the app's EventGrid Data Sender role on it.
module notifications 'modules/notifications.bicep' = {
  name: 'notifications'
  scope: rg
  params: {
    name: 'evgt-retrain-notify-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
  }
}

// The app's data roles on the storage account.
module storageAccess 'modules/storage-access.bicep' = {
  name: 'storage-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appPrincipalId: identity.outputs.principalId
  }
}

module monitoringAccess 'modules/monitoring-access.bicep' = {
  name: 'monitoring-access'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
  }
}

module healthLogsAccess 'modules/log-analytics-reader.bicep' = if (!externalHealthWorkspace) {
  name: 'health-logs-access'
  scope: rg
  params: {
    workspaceName: monitoring.outputs.logAnalyticsName
    appPrincipalId: identity.outputs.principalId
  }
}

module healthLogsAccessExternal 'modules/log-analytics-reader.bicep' = if (externalHealthWorkspace) {
  name: 'retrain-health-logs-access-${resourceToken}'
  scope: resourceGroup(healthWorkspaceSubscription, healthWorkspaceResourceGroup)
  params: {
    workspaceName: last(split(healthLogAnalyticsWorkspaceId, '/'))
    appPrincipalId: identity.outputs.principalId
  }
}

// Deployments into resource groups that other environments also deploy to (the workspace's, the
// topic's, the health workspace's) carry the token: a nested deployment is named per resource
// group, and a fixed name would let one environment's deployment replace another's record.
module workspaceAccess 'modules/workspace-access.bicep' = {
  name: 'retrain-workspace-access-${resourceToken}'
  scope: resourceGroup(mlSubscriptionId, mlWorkspaceResourceGroup)
  params: {
    workspaceName: mlWorkspaceName
    appPrincipalId: identity.outputs.principalId
    workspaceRole: workspaceRole
    nameToken: resourceToken
    workspaceStorageAccountName: workspaceStorageAccountName
    batchDatastoreName: batchDatastoreName
  }
}

// The registry a downstream environment serves from: a custom role that reads its model versions
// (modules/registry-access.bicep), only when one is named.
module registryAccess 'modules/registry-access.bicep' = if (registryReads) {
  name: 'retrain-registry-access-${resourceToken}'
  scope: resourceGroup(registrySubscription, registryGroup)
  params: {
    registryName: registryName
    appPrincipalId: identity.outputs.principalId
    nameToken: resourceToken
  }
}

// The registry a dev (upstream) environment shares its promotions into: a custom role that also
// imports versions (modules/registry-publisher.bicep).
module registryPublisher 'modules/registry-publisher.bicep' = if (registryPublishes) {
  name: 'retrain-registry-publisher-${resourceToken}'
  scope: resourceGroup(registrySubscription, registryGroup)
  params: {
    registryName: registryName
    appPrincipalId: identity.outputs.principalId
    nameToken: resourceToken
  }
}

// Monitoring Reader on the workspace's subscription itself: the metrics batch API (the rollout health
// gates' platform metrics) is a subscription-level API and answers 401 with the role on the workspace
// only. Named with the token: each environment's deployment record at that subscription is its own.
module metricsReader 'modules/metrics-reader.bicep' = {
  name: 'retrain-metrics-reader-${resourceToken}'
  scope: subscription(mlSubscriptionId)
  params: {
    appPrincipalId: identity.outputs.principalId
  }
}

module events 'modules/events.bicep' = {
  name: 'retrain-events-${resourceToken}'
  scope: resourceGroup(mlSubscriptionId, topicResourceGroup)
  params: {
    systemTopicName: topicName
    location: workspaceAccess.outputs.location
    tags: tags
    existingTopicState: systemTopicState
    workspaceId: workspaceAccess.outputs.id
    nameToken: resourceToken
    functionAppId: functionApp.outputs.id
    functionName: eventGridFunctionName
    deadLetterStorageAccountId: storage.outputs.id
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    deployEventSubscriptions: deployEventSubscriptions
  }
}

// A downstream (prod) environment learns of its upstream's promotions from the upstream's
// notification topic (in the dev subscription): a subscription to it delivering to the Event Grid
// trigger (modules/upstream-subscription.bicep); the registry poll catches what it misses.
module upstreamSubscription 'modules/upstream-subscription.bicep' = if (upstreamSubscribes) {
  name: 'retrain-upstream-${resourceToken}'
  scope: resourceGroup(upstreamTopicSubscription, upstreamTopicGroup)
  params: {
    topicName: last(upstreamTopicParts)
    nameToken: resourceToken
    functionAppId: functionApp.outputs.id
    functionName: eventGridFunctionName
    maxDeliveryAttempts: maxDeliveryAttempts
    deployEventSubscriptions: deployEventSubscriptions
  }
}

// The topic dead-letters as its system-assigned identity, which exists once the topic does: its
// one role, on this environment's dead-letter container. The subscriptions that dead-letter are
// created by the postdeploy hook's provision, after the first provision made this role.
module deadLetterAccess 'modules/deadletter-access.bicep' = {
  name: 'deadletter-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    topicPrincipalId: events.outputs.systemTopicPrincipalId
  }
}

// New training data (retrain.on.data): the data account's system topic and its BlobCreated subscriptions,
// to the same Event Grid trigger. The app gets no role there (data-events.bicep says why).
module dataEvents 'modules/data-events.bicep' = if (newData) {
  name: 'retrain-data-events-${resourceToken}'
  scope: resourceGroup(newDataSubscription, newDataResourceGroup)
  params: {
    storageAccountName: newDataAccountName
    systemTopicName: empty(newDataTopicName) ? 'evgt-${newDataAccountName}' : newDataTopicName
    tags: tags
    sources: newDataSources
    nameToken: resourceToken
    functionAppId: functionApp.outputs.id
    functionName: eventGridFunctionName
    deadLetterStorageAccountId: storage.outputs.id
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    deployEventSubscriptions: deployEventSubscriptions
  }
}

// The data topic's system-assigned identity dead-letters too: the same one role, on this environment's container.
module dataDeadLetterAccess 'modules/deadletter-access.bicep' = if (newData) {
  name: 'data-deadletter-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    topicPrincipalId: newData ? dataEvents.outputs.systemTopicPrincipalId : ''
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    nameToken: resourceToken
    systemTopicId: events.outputs.systemTopicId
    subscriptionNames: events.outputs.subscriptionNames
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
    tags: tags
  }
}

module trafficLogs 'modules/traffic-logs.bicep' = if (!empty(trafficLogEndpointNames)) {
  name: 'retrain-traffic-logs-${resourceToken}'
  scope: resourceGroup(mlSubscriptionId, mlWorkspaceResourceGroup)
  params: {
    workspaceName: mlWorkspaceName
    endpointNames: trafficLogEndpointNames
    logAnalyticsWorkspaceId: healthWorkspaceId
    settingName: 'retrain-traffic-${resourceToken}'
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_RETRAIN_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}'
// The app's identity, its client id and object (principal) id: what a downstream (prod) environment's policy
// names as environment.upstream_identity to take this (dev) environment's registry versions (docs/operations.md).
output RETRAIN_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output RETRAIN_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output RETRAIN_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output RETRAIN_DEADLETTER_CONTAINER_NAME string = storage.outputs.deadLetterContainerName
output RETRAIN_SYSTEM_TOPIC_NAME string = events.outputs.systemTopicName
output RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP string = topicResourceGroup
output RETRAIN_EVENT_SUBSCRIPTION_NAMES string = join(events.outputs.subscriptionNames, ',')
output RETRAIN_NEW_DATA_SUBSCRIPTION_NAMES string = newData ? join(dataEvents.outputs.subscriptionNames, ',') : ''
output RETRAIN_LOG_ANALYTICS_WORKSPACE_ID string = healthWorkspaceId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output RETRAIN_NOTIFY_TOPIC_ID string = notifications.outputs.id
output RETRAIN_NOTIFY_TOPIC_NAME string = notifications.outputs.name
