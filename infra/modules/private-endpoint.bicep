// One private endpoint for one sub-resource (blob, queue, table, Speech's account...) and its DNS
// zone group, which writes the endpoint's A record into the matching private DNS zone (created by
// network.bicep) so the service's usual host name resolves to the private IP inside the network.

@description('Private endpoint name.')
param name string

@description('Azure region (the network\'s).')
param location string

@description('Tags applied to the endpoint.')
param tags object

@description('Resource id of the private-endpoints subnet.')
param subnetId string

@description('Resource id of the service the endpoint connects to.')
param targetId string

@description('Private-link sub-resource (group id) of that service: blob, queue, table, account, topic...')
param groupId string

@description('Name of the private DNS zone of that sub-resource (in this resource group).')
param privateDnsZoneName string

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(privateDnsZoneName, '.', '-')
        properties: {
          privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', privateDnsZoneName)
        }
      }
    ]
  }
}

output id string = endpoint.id
