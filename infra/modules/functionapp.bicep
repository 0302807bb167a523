// The function app on the Flex Consumption plan, running as the service's user-assigned identity.
//
// Flex Consumption takes the runtime, scale and deployment storage from `functionAppConfig`, and
// deprecates the app settings that used to carry them (FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENT*...): none are set here.
// AzureWebJobsFeatureFlags=EnableWorkerIndexing is not set either: worker indexing is how the
// Python v2 model always loads on the 4.x host, and Flex lists no such flag.

@description('Name of the function app.')
param name string

@description('Name of the Flex Consumption plan (one app per plan).')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags of the plan and the app.')
param tags object = {}

@description('azd service name from azure.yaml: azd finds the app to deploy to by this tag.')
param serviceName string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of the same identity (for AzureWebJobsStorage, App Insights and DefaultAzureCredential).')
param identityClientId string

@description('Name of the storage account used as host storage (AzureWebJobsStorage).')
param storageAccountName string

@description('Blob endpoint of that account, https://ACCOUNT.blob.core.windows.net/.')
param storageBlobEndpoint string

@description('Container of the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string (no key use: local auth is disabled on the component).')
param applicationInsightsConnectionString string

// Secure: it carries RETRAIN_JOB_NAME_KEY, which a plain object parameter would show in the
// deployment history to anyone who can read the resource group.
@secure()
@description('The service\'s own settings (RETRAIN_*, AZUREML_*...), merged over the host settings below.')
param appSettings object

@description('Client (application) id of the Entra app registration that callers sign in to; empty: App Service authentication off.')
param authClientId string = ''

@description('OpenID issuer of that registration; empty: https://login.microsoftonline.com/<this tenant>/v2.0.')
param authIssuer string = ''

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Upper bound of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// Settings of the Functions host itself, not of the service code.
var hostSettings = {
  // Identity-based host storage: no connection string, no account key.
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The worker's root script: a root function_app.py would be shadowed by the function_app/ package.
  PYTHON_SCRIPT_FILE_NAME: 'main.py'
}

var settings = union(hostSettings, appSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(settings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Entra ID sign-in (App Service authentication), written on every provision from the parameters,
// so a provision never leaves behind what it does not say; with authClientId empty it is off.
// Client-secret-less: the platform only validates bearer tokens issued for the registration (an
// API's callers: `az account get-access-token --resource api://<client id>`, MSAL); no browser
// login flow, so no secret and no setting holding one. Unauthenticated requests still reach the
// app (AllowAnonymous): Event Grid and action groups call with keys, /api/health is public, and
// the app itself refuses a manual request without a signed-in principal holding the operator role
// (RETRAIN_APP_SERVICE_AUTH, set from the same parameter in main.bicep). App Service strips
// client-sent X-MS-CLIENT-PRINCIPAL* headers once authentication is on ("External requests aren't
// allowed to set these headers", App Service docs, "Work with user identities").
var signIn = !empty(authClientId)
var issuer = empty(authIssuer) ? '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0' : authIssuer

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: signIn
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    identityProviders: {
      azureActiveDirectory: signIn ? {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: issuer
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      } : {
        enabled: false
      }
    }
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
