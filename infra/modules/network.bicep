// Private networking (vnetEnabled), as the azd Flex Consumption quickstarts do it: a virtual
// network with one subnet delegated to Microsoft.App/environments (Flex Consumption's VNet
// integration: the app's outbound traffic enters the network there) and one subnet for private
// endpoints, plus the private DNS zones that make the services' usual host names resolve to
// those endpoints inside the network. Inbound traffic to the app is not affected: Graph still
// reaches the calling webhook on the app's public host name.

@description('Virtual network name.')
param name string

@description('Azure region (the Function App\'s).')
param location string

@description('Tags applied to the network and the zones.')
param tags object

@description('Address space of the virtual network.')
param addressPrefix string = '10.0.0.0/16'

@description('Subnet delegated to the Flex Consumption app (Microsoft.App/environments). A /24 leaves room for the app\'s largest scale-out.')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Subnet that holds the private endpoints.')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

@description('Private DNS zones to create and link to the network, one per private-link service (privatelink.blob.core.windows.net, ...).')
param privateDnsZoneNames array

var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

// Private DNS zones are global resources; each is linked to the network so that, from inside it,
// <account>.blob.core.windows.net resolves (through its privatelink CNAME) to the endpoint's IP.
resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zoneName in privateDnsZoneNames: {
  name: zoneName
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zoneName, index) in privateDnsZoneNames: {
  parent: zones[index]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output id string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
output privateEndpointSubnetId string = '${vnet.id}/subnets/${privateEndpointSubnetName}'
