// "Cognitive Services User" for one principal, scoped to one Azure AI Services / AI Foundry account.
// A module so that the account may live in another resource group than the app
// (main.bicep deploys it with scope: resourceGroup(aiAccountResourceGroup)).

@description('Name of the existing Microsoft.CognitiveServices/accounts resource in this resource group.')
param aiAccountName string

@description('Object (principal) ID of the managed identity that gets the role.')
param principalId string

// Built-in role "Cognitive Services User" (data-plane access, including Entra-authenticated Voice Live).
var cognitiveServicesUserRoleId = 'a97b65f3-24c7-4388-baec-2e87135dc908'

resource aiAccount 'Microsoft.CognitiveServices/accounts@2023-05-01' existing = {
  name: aiAccountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(aiAccount.id, principalId, cognitiveServicesUserRoleId)
  scope: aiAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output roleAssignmentId string = assignment.id
