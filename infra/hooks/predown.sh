#!/bin/sh
# azd predown hook (azure.yaml): refuse `azd down`. azd deletes every resource group a deployment
# touched, and this one touches the Azure ML workspace's resource group (the workspace's system
# topic and role assignment live there): `azd down` could delete the workspace itself.
# infra/README.md, "Removing the service", deletes only what the service created.
echo "azd down is disabled for this project: it would delete the Azure ML workspace's resource group" >&2
echo "(${AZUREML_RESOURCE_GROUP:-the workspace's resource group}) along with the service's own." >&2
echo "To remove the service, follow infra/README.md, 'Removing the service'." >&2
exit 1
