// "AcrPull" for one principal on one container registry, so the container app pulls its image with
// its managed identity (no registry password stored anywhere).

@description('Name of the existing Microsoft.ContainerRegistry/registries resource in this resource group.')
param registryName string

@description('Object (principal) ID of the managed identity that gets the role.')
param principalId string

// Built-in role "AcrPull".
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output roleAssignmentId string = assignment.id
