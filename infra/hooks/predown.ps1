# azd predown hook for Windows; see predown.sh: `azd down` would delete the Azure ML workspace's
# resource group, so it is refused. infra/README.md, "Removing the service", says what to do.
Write-Error "azd down is disabled for this project: it would delete the Azure ML workspace's resource group ($env:AZUREML_RESOURCE_GROUP) along with the service's own. To remove the service, follow infra/README.md, 'Removing the service'."
exit 1
